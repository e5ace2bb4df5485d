"""The scan policy: which findings fail the gate, and which accepted risks are allowlisted until when.

A site-wide file (`scans/policy.yaml`, or the profile's `scan.policy`) sets the gate; a processor may
add `scan-policy.yaml` beside its processor.yaml, which can only make the gate stricter and add
allowlist entries. That way a processor's own repository carries (and reviews) its exceptions, but no
processor can switch the gate off.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from imagekit.errors import InputError
from imagekit.resources import data_path

Severity = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
LicenseCategory = Literal[
    "forbidden", "restricted", "reciprocal", "notice", "permissive", "unencumbered", "unknown"
]
LICENSE_CATEGORIES: tuple[LicenseCategory, ...] = get_args(LicenseCategory)
PROCESSOR_POLICY_FILE = "scan-policy.yaml"


def default_policy_path() -> Path:
    """The site-wide policy shipped with imagekit, used when the profile names none."""
    return data_path("scans/policy.yaml")


class AllowEntry(BaseModel):
    """An accepted finding: suppresses it through `expires` (inclusive), then stops and says so."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    reason: str
    expires: date

    @field_validator("id", "reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    def matches(self, ids: tuple[str, ...]) -> bool:
        return self.id.upper() in (i.upper() for i in ids)

    def active(self, today: date) -> bool:
        return today <= self.expires


class _PolicyFile(BaseModel):
    """One policy file as written; unset fields inherit."""

    model_config = ConfigDict(extra="forbid")

    fail_on: list[Severity] | None = None
    ignore_unfixed: bool | None = None
    fail_on_licenses: list[LicenseCategory] | None = None
    max_db_age_days: int | None = Field(default=None, ge=1)
    allowlist: list[AllowEntry] = []


class Policy(BaseModel):
    """The effective policy a scan is judged by; defaults are the safe ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fail_on: tuple[Severity, ...] = ("CRITICAL", "HIGH")
    ignore_unfixed: bool = False
    fail_on_licenses: tuple[LicenseCategory, ...] = ("forbidden",)
    max_db_age_days: int = Field(default=7, ge=1)
    allowlist: tuple[AllowEntry, ...] = ()
    sources: tuple[str, ...] = ()
    """The files this policy was read from, for the summary."""

    @field_validator("fail_on")
    @classmethod
    def _severity_order(cls, value: tuple[Severity, ...]) -> tuple[Severity, ...]:
        return tuple(severity for severity in SEVERITIES if severity in value)

    @field_validator("fail_on_licenses")
    @classmethod
    def _category_order(cls, value: tuple[LicenseCategory, ...]) -> tuple[LicenseCategory, ...]:
        return tuple(category for category in LICENSE_CATEGORIES if category in value)


def _read(path: Path) -> _PolicyFile:
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the scan policy: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, ValueError) as exc:  # PyYAML raises ValueError for a date like 2025-13-01
        raise InputError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a scan policy must be a mapping of settings")
    try:
        return _PolicyFile.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{path}: {'.'.join(str(part) for part in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise InputError("\n".join(problems)) from exc


def _stricter(site: Policy, override: _PolicyFile, path: Path) -> Policy:
    """Fold a processor's file into the site policy; refuse anything that would relax the gate."""
    if override.ignore_unfixed and not site.ignore_unfixed:
        raise InputError(
            f"{path}: ignore_unfixed: a processor cannot ignore unfixed vulnerabilities when the site "
            "policy counts them; allowlist the accepted ones instead"
        )
    if override.max_db_age_days is not None and override.max_db_age_days > site.max_db_age_days:
        raise InputError(
            f"{path}: max_db_age_days: {override.max_db_age_days} is more than the site's "
            f"{site.max_db_age_days}; a processor may only ask for a fresher database"
        )
    return Policy(
        fail_on=(*site.fail_on, *(override.fail_on or ())),
        ignore_unfixed=site.ignore_unfixed and override.ignore_unfixed is not False,
        fail_on_licenses=(*site.fail_on_licenses, *(override.fail_on_licenses or ())),
        max_db_age_days=override.max_db_age_days or site.max_db_age_days,
        allowlist=site.allowlist + tuple(override.allowlist),
        sources=(*site.sources, str(path)),
    )


def load_policy(site: Path, override: Path | None = None) -> Policy:
    """Read the site policy and, if given, a processor's stricter override; InputError names file + field."""
    read = _read(site).model_dump(exclude_none=True)
    policy = Policy.model_validate({**read, "sources": (str(site),)})
    return policy if override is None else _stricter(policy, _read(override), override)

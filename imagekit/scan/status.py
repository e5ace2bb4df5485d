"""Scan results bound to image content: `<data_dir>/scans/sha256-<hex>.json`, one per image id.

The key is the local image id (the config digest): a rebuild with different content gets a new id and
so is "not scanned", whatever its tag. Later steps (push) ask here instead of trusting a tag. A record
that cannot be read is an error, never "not scanned": it would hide what is known about the image.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from imagekit.engines import Engine
from imagekit.engines.docker import DockerEngine
from imagekit.errors import InputError, PolicyError, ToolError

RecordedStatus = Literal["passed", "passed, vulnerabilities not checked", "failed"]
"""`passed, vulnerabilities not checked`: the gate passed on secrets, misconfigurations and licenses,
with no vulnerability DB (only where the profile says `scan.vulnerability_db = "when-available"`)."""
ScanStatus = Literal[RecordedStatus, "not scanned"]
PASSED: Literal["passed"] = "passed"
PASSED_UNCHECKED: Literal["passed, vulnerabilities not checked"] = "passed, vulnerabilities not checked"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class ScanRecord(BaseModel):
    """What a later step needs to know about one scanned image."""

    model_config = ConfigDict(extra="ignore")

    digest: str
    image: str
    name: str
    version: str
    status: RecordedStatus
    rule: str
    scanned_at: datetime
    valid_until: date | None = None
    """A pass that relied on allowlist entries holds only while they do."""
    reports: str
    db_repository: str | None = None
    """The vulnerability DB the scan used; None: vulnerabilities were not checked."""
    db_updated_at: datetime | None = None

    @model_validator(mode="after")
    def _status_matches_db(self) -> ScanRecord:
        if self.status == PASSED and self.db_repository is None:
            raise ValueError("status 'passed' without the vulnerability DB it was checked against")
        if self.status == PASSED_UNCHECKED and self.db_repository is not None:
            raise ValueError(f"status '{PASSED_UNCHECKED}' names a vulnerability DB")
        return self

    @property
    def vulnerabilities_checked(self) -> bool:
        return self.db_repository is not None


def image_id(image: str, *, docker: str = "docker") -> str | None:
    """The Docker engine's id (`sha256:...`) of `image`, or None if it does not have it."""
    return DockerEngine(docker, network="none", insecure_registries=[]).image_id(image)


def _path(data_dir: Path, digest: str) -> Path:
    return data_dir / "scans" / (digest.replace(":", "-") + ".json")


def record(data_dir: Path, entry: ScanRecord) -> Path:
    """Store atomically: a reader sees the old record or the new one, never half of one."""
    path = _path(data_dir, entry.digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(entry.model_dump_json(indent=2))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _resolve(image_or_digest: str, engine: Engine | None) -> str | None:
    if _DIGEST.match(image_or_digest):
        return image_or_digest
    return engine.image_id(image_or_digest) if engine is not None else image_id(image_or_digest)


def lookup(image_or_digest: str, data_dir: Path, *, engine: Engine | None = None) -> ScanRecord | None:
    """The stored record for an image (by name, via `engine`, Docker by default) or a `sha256:` id;
    None if none.

    Raises ToolError (exit 1) for a record that exists but cannot be read or is corrupt.
    """
    digest = _resolve(image_or_digest, engine)
    if digest is None:
        return None
    path = _path(data_dir, digest)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolError(f"{path}: cannot read the scan record of {image_or_digest}: {exc}") from exc
    try:
        found = ScanRecord.model_validate_json(text)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        problem = f"{where}: {error['msg']}" if where else error["msg"]
        raise _corrupt(path, image_or_digest, problem) from exc
    if found.digest != digest:
        raise _corrupt(path, image_or_digest, f"it records {found.digest}, not {digest}")
    return found


def _corrupt(path: Path, image: str, problem: str) -> ToolError:
    return ToolError(
        f"{path}: the scan record of {image} is corrupt ({problem})",
        hint=f"delete {path} and scan the image again (imagekit scan)",
    )


def _status(found: ScanRecord | None, today: date) -> ScanStatus:
    if found is None:
        return "not scanned"
    if found.status != "failed" and found.valid_until and today > found.valid_until:
        return "not scanned"
    return found.status


def scan_status(image_or_digest: str, data_dir: Path, *, engine: Engine | None = None) -> ScanStatus:
    """The recorded status of the exact content scanned; "not scanned" for anything else, including a
    pass whose allowlist entries have since expired (it needs a new scan). A corrupt record raises."""
    return _status(lookup(image_or_digest, data_dir, engine=engine), date.today())


def require_passed(
    image: str,
    data_dir: Path,
    *,
    skip_reason: str | None,
    require_vulnerabilities_checked: bool = False,
    engine: Engine | None = None,
) -> ScanStatus:
    """Let a step go on only for a passed image, or with a stated reason to skip the gate.

    `passed, vulnerabilities not checked` is a pass unless `require_vulnerabilities_checked` (the last
    channel asks for it). Returns the status so the caller can record how it went ahead, e.g. on a
    skip reason or on a pass without vulnerability checks. Raises PolicyError (exit 3) otherwise.
    """
    if skip_reason is not None and not skip_reason.strip():
        raise InputError("a reason to skip the scan gate must say why; it was empty")
    found = lookup(image, data_dir, engine=engine)
    status = _status(found, date.today())
    if status == PASSED or (status == PASSED_UNCHECKED and not require_vulnerabilities_checked):
        return status
    if skip_reason:
        return status
    hint = "scan it (imagekit scan), fix or allowlist what failed, or give a reason to skip the gate"
    if found is not None and status == "failed":
        why = f"its scan failed ({found.rule}); reports in {found.reports}"
    elif found is not None and status == PASSED_UNCHECKED:
        why = "its scan passed without checking vulnerabilities (no vulnerability DB); this step needs them"
        hint = "set scan.trivy_db_repository to the site's Trivy DB mirror and scan again (imagekit scan)"
    elif found is not None:
        why = f"its pass relied on allowlist entries that expired after {found.valid_until}"
    else:
        why = "no scan of this exact content is recorded"
    raise PolicyError(f"{image} may not go on: {why}", hint=hint)

"""Scan results bound to image content: `<data_dir>/scans/sha256-<hex>.json`, one per image id.

The key is the local image id (the config digest): a rebuild with different content gets a new id and
so is "not scanned", whatever its tag. Later steps (push) ask here instead of trusting a tag.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from imagekit.errors import InputError, MissingPartError, PolicyError, ToolError

Status = Literal["passed", "failed", "not scanned"]
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class ScanRecord(BaseModel):
    """What a later step needs to know about one scanned image."""

    model_config = ConfigDict(extra="ignore")

    digest: str
    image: str
    name: str
    version: str
    status: Literal["passed", "failed"]
    rule: str
    scanned_at: datetime
    valid_until: date | None = None
    """A pass that relied on allowlist entries holds only while they do."""
    reports: str
    db_repository: str
    db_updated_at: datetime


def image_id(image: str, *, docker: str = "docker") -> str | None:
    """The local engine's id (`sha256:...`) of `image`, or None if the engine does not have it."""
    try:
        done = subprocess.run(
            [docker, "image", "inspect", "--format", "{{.Id}}", image],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise MissingPartError("docker", f"'{docker}' is not installed or not on PATH") from exc
    if done.returncode == 0:
        return done.stdout.strip()
    if "no such image" in done.stderr.lower():
        return None
    raise ToolError(f"{docker} image inspect {image} failed: {done.stderr.strip() or 'no output'}")


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


def _resolve(image_or_digest: str, docker: str) -> str | None:
    if _DIGEST.match(image_or_digest):
        return image_or_digest
    return image_id(image_or_digest, docker=docker)


def lookup(image_or_digest: str, data_dir: Path, *, docker: str = "docker") -> ScanRecord | None:
    """The stored record for an image (by name, via the engine) or a `sha256:` id; None if none."""
    digest = _resolve(image_or_digest, docker)
    if digest is None:
        return None
    try:
        return ScanRecord.model_validate_json(_path(data_dir, digest).read_text(encoding="utf-8"))
    except (OSError, ValidationError):
        return None


def _status(found: ScanRecord | None, today: date) -> Status:
    if found is None:
        return "not scanned"
    if found.status == "passed" and found.valid_until and today > found.valid_until:
        return "not scanned"
    return found.status


def scan_status(image_or_digest: str, data_dir: Path, *, docker: str = "docker") -> Status:
    """passed / failed for the exact content scanned; "not scanned" for anything else, including a
    pass whose allowlist entries have since expired (it needs a new scan)."""
    return _status(lookup(image_or_digest, data_dir, docker=docker), date.today())


def require_passed(image: str, data_dir: Path, *, skip_reason: str | None, docker: str = "docker") -> Status:
    """Let a step go on only for a passed image, or with a stated reason to skip the gate.

    Returns the status so the caller can record that it went ahead on a skip reason.
    """
    if skip_reason is not None and not skip_reason.strip():
        raise InputError("a reason to skip the scan gate must say why; it was empty")
    found = lookup(image, data_dir, docker=docker)
    status = _status(found, date.today())
    if status == "passed" or skip_reason:
        return status
    if found is not None and status == "failed":
        why = f"its scan failed ({found.rule}); reports in {found.reports}"
    elif found is not None:
        why = f"its pass relied on allowlist entries that expired after {found.valid_until}"
    else:
        why = "no scan of this exact content is recorded"
    raise PolicyError(
        f"{image} may not go on: {why}",
        hint="scan it (imagekit scan), fix or allowlist what failed, or give a reason to skip the gate",
    )

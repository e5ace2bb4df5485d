"""The scan status as the registry knows it: an artifact attached to the image at push time.

It carries the status, the scan record (summary JSON), the SBOM and the human summary, or the
reason, who and when of a skipped gate. Promote and `releases` read it here, never from local state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from imagekit.registry.attach import CREATED, Mode, Part, put_artifact, referrers
from imagekit.registry.client import Manifest, RegistryClient
from imagekit.registry.names import now, who
from imagekit.scan.status import ScanRecord

SCAN_ARTIFACT = "application/vnd.imagekit.scan.v1+json"
STATUS = "imagekit.scan.status"
SKIP_REASON = "imagekit.scan.skip.reason"
SKIP_BY = "imagekit.scan.skip.by"
PUSHED_BY = "imagekit.pushed.by"
NOT_SCANNED = "not scanned"
REPORT_FILES = (
    ("sbom.cdx.json", "application/vnd.cyclonedx+json"),
    ("summary.md", "text/markdown"),
)


@dataclass(frozen=True)
class RegistryScan:
    """The newest scan artifact attached to one digest."""

    status: str
    pushed_at: str = ""
    pushed_by: str = ""
    skip_reason: str = ""

    @property
    def skipped(self) -> bool:
        return bool(self.skip_reason)

    def describe(self) -> str:
        if not self.skipped:
            return self.status
        return f"{self.status}; gate skipped by {self.pushed_by} at {self.pushed_at}: {self.skip_reason}"


def attach_scan(
    client: RegistryClient,
    repository: str,
    subject: Manifest,
    *,
    status: str,
    record: BaseModel | None,
    reports: Path | None,
    skip_reason: str | None,
) -> Mode | None:
    """Attach what is known about the scan of `subject` (and a skip reason, if one was given)."""
    parts: list[Part] = []
    if record is not None:
        parts.append(Part("scan-record.json", "application/json", record.model_dump_json(indent=2).encode()))
    for name, media_type in REPORT_FILES:
        path = reports / name if reports else None
        if path is not None and path.is_file():
            parts.append(Part(name, media_type, path.read_bytes()))
    annotations = {STATUS: status, PUSHED_BY: who(), CREATED: now()}
    if skip_reason:
        annotations[SKIP_REASON] = " ".join(skip_reason.split())
        annotations[SKIP_BY] = annotations[PUSHED_BY]
    _, mode = put_artifact(client, repository, SCAN_ARTIFACT, parts, annotations, subject=subject)
    return mode


def read_scan(client: RegistryClient, repository: str, digest: str) -> RegistryScan:
    """The newest attached scan status of `digest`; "not scanned" when none is attached."""
    found = referrers(client, repository, digest, SCAN_ARTIFACT)
    if not found:
        return RegistryScan(NOT_SCANNED)
    notes = found[-1].get("annotations") or {}
    return RegistryScan(
        status=str(notes.get(STATUS, NOT_SCANNED)),
        pushed_at=str(notes.get(CREATED, "")),
        pushed_by=str(notes.get(PUSHED_BY, "")),
        skip_reason=str(notes.get(SKIP_REASON, "")),
    )


def read_scan_record(client: RegistryClient, repository: str, digest: str) -> ScanRecord | None:
    """The scan record (status, when, which vulnerability DB) attached with the newest scan of
    `digest`; None when none is attached or it is not a record this imagekit reads."""
    data = _part(client, repository, digest, "application/json", 1024 * 1024)
    try:
        return ScanRecord.model_validate(data) if data is not None else None
    except ValidationError:
        return None


def _part(client: RegistryClient, repository: str, digest: str, media_type: str, limit: int) -> object:
    """The JSON part of `media_type` in the newest scan artifact of `digest`, None if there is none."""
    found = referrers(client, repository, digest, SCAN_ARTIFACT)
    if not found:
        return None
    artifact = client.manifest(repository, str(found[-1]["digest"])).json()
    for part in artifact.get("layers") or []:
        if part.get("mediaType") == media_type and int(part.get("size", 0)) < limit:
            with client.blob(repository, str(part["digest"])) as stream:
                return json.loads(stream.read())
    return None


def read_sbom(client: RegistryClient, repository: str, digest: str) -> dict[str, object] | None:
    """The CycloneDX SBOM attached with the newest scan of `digest`, None when none is attached."""
    data = _part(client, repository, digest, REPORT_FILES[0][1], 64 * 1024 * 1024)
    return data if isinstance(data, dict) else None

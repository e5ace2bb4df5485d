"""scan_image: every scanner over one built image, judged by the policy, kept as reports and a status.

Vulnerabilities are always checked against the site's DB: with no DB repository configured, or a DB
that cannot be fetched or is stale, the scan is a tool failure (exit 1), never a pass.
"""

from __future__ import annotations

import re
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from imagekit.errors import InputError, MissingPartError, PolicyError, ToolError
from imagekit.scan.decision import Decision, decide
from imagekit.scan.findings import parse_report
from imagekit.scan.policy import Policy
from imagekit.scan.report import atomic_dir, render_summary
from imagekit.scan.status import ScanRecord, image_id, record
from imagekit.scan.trivy import DEFAULT_TRIVY, DbInfo, Trivy

_PATH_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
REPORT_FILES = {
    "image": "image.json",
    "dockerfile": "dockerfile.json",
    "processor": "processor-secrets.json",
    "sbom": "sbom.cdx.json",
    "summary": "summary.md",
}


class ScanResult(BaseModel):
    """One scan of one image id: the decision, and where its reports are."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    image: str
    digest: str
    decision: Decision
    reports: Path
    db: DbInfo
    trivy_version: str
    scanned_at: datetime
    os: str
    policy_sources: tuple[str, ...]
    dockerfile_checked: bool
    processor_checked: bool

    @property
    def passed(self) -> bool:
        return self.decision.passed

    @property
    def summary(self) -> Path:
        return self.reports / REPORT_FILES["summary"]


class ScanFailed(PolicyError):
    """The gate said no (exit 3); the reports and the recorded status are already written."""

    def __init__(self, result: ScanResult) -> None:
        super().__init__(
            f"scan of {result.image} failed: {result.decision.rule}",
            hint=f"details in {result.summary}",
        )
        self.result = result


def _os(report: dict[str, object]) -> str:
    meta = report.get("Metadata")
    found = meta.get("OS") if isinstance(meta, dict) else None
    if not isinstance(found, dict):
        return ""
    text = f"{found.get('Family', '')} {found.get('Name', '')}".strip()
    return text + (" (end of service life: fixes may be missing from the DB)" if found.get("EOSL") else "")


def _check_inputs(name: str, version: str, dockerfile: Path | None, processor_dir: Path | None) -> None:
    for label, value in (("name", name), ("version", version)):
        if not _PATH_PART.match(value):
            raise InputError(
                f"scan: {label} {value!r} cannot name a report directory (letters, digits, ._+-)"
            )
    if dockerfile is not None and not dockerfile.is_file():
        raise InputError(f"scan: the rendered Dockerfile {dockerfile} does not exist")
    if processor_dir is not None and not processor_dir.is_dir():
        raise InputError(f"scan: the processor directory {processor_dir} does not exist")


def scan_image(
    image: str,
    *,
    name: str,
    version: str,
    dockerfile: Path | None,
    processor_dir: Path | None,
    policy: Policy,
    db_repository: str,
    reports_root: Path,
    cache_dir: Path,
    data_dir: Path,
    trivy: str = DEFAULT_TRIVY,
    docker: str = "docker",
) -> ScanResult:
    """Scan a local engine image; return its result if it passed, raise ScanFailed if not.

    Raises MissingPartError/ToolError (exit 1) for no, unreachable or stale DB or a Trivy failure,
    InputError (exit 2) for bad arguments, ScanFailed, a PolicyError (exit 3), when the gate fails.
    """
    _check_inputs(name, version, dockerfile, processor_dir)
    if not db_repository.strip():
        raise MissingPartError(
            "the Trivy vulnerability DB",
            "set scan.trivy_db_repository in the profile to <registry>/<repository>:<tag> holding a "
            "trivy-db OCI artifact (imagekit never scans without one, so an unchecked image cannot pass)",
        )
    digest = image_id(image, docker=docker)
    if digest is None:
        raise InputError(f"scan: image {image} is not in the local engine; build it first")
    final = reports_root / name / version
    with tempfile.TemporaryDirectory(prefix="imagekit-scan-") as work:
        runner = Trivy(trivy, cache_dir, Path(work))
        trivy_version = runner.version()
        db = runner.fetch_db(db_repository.strip(), max_age_days=policy.max_db_age_days)
        with atomic_dir(final) as staging:
            report = runner.scan_image(image, staging / REPORT_FILES["image"])
            scanned_id = (report.get("Metadata") or {}).get("ImageID")
            if scanned_id != digest:
                raise ToolError(
                    f"{image} changed while it was scanned ({digest} became {scanned_id}); scan again"
                )
            findings = parse_report(report, "image")
            if dockerfile is not None:
                config = runner.scan_dockerfile(dockerfile, staging / REPORT_FILES["dockerfile"])
                findings += parse_report(config, "dockerfile")
            if processor_dir is not None:
                secrets = runner.scan_secrets(processor_dir, staging / REPORT_FILES["processor"])
                findings += parse_report(secrets, "processor")
            runner.sbom(staging / REPORT_FILES["image"], staging / REPORT_FILES["sbom"])
            result = ScanResult(
                name=name,
                version=version,
                image=image,
                digest=digest,
                decision=decide(findings, policy, date.today()),
                reports=final,
                db=db,
                trivy_version=trivy_version,
                scanned_at=datetime.now(UTC),
                os=_os(report),
                policy_sources=policy.sources,
                dockerfile_checked=dockerfile is not None,
                processor_checked=processor_dir is not None,
            )
            (staging / REPORT_FILES["summary"]).write_text(render_summary(result), encoding="utf-8")
    record(
        data_dir,
        ScanRecord(
            digest=digest,
            image=image,
            name=name,
            version=version,
            status="passed" if result.passed else "failed",
            rule=result.decision.rule,
            scanned_at=result.scanned_at,
            valid_until=result.decision.valid_until,
            reports=str(final),
            db_repository=db.repository,
            db_updated_at=db.updated_at,
        ),
    )
    if not result.passed:
        raise ScanFailed(result)
    return result

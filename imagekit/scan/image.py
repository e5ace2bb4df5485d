"""scan_image: every scanner over one built image, judged by the policy, kept as reports and a status.

Vulnerabilities are checked against the site's DB. With no DB repository configured the scan refuses
(exit 1), unless the caller allows it (profile `scan.vulnerability_db = "when-available"`): then
secrets, misconfigurations, licenses and the SBOM still run, and a pass is recorded as `passed,
vulnerabilities not checked`. A configured DB that cannot be fetched or is stale is always a tool
failure (exit 1), never a silent downgrade.
"""

from __future__ import annotations

import re
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from imagekit.engines import Engine
from imagekit.errors import InputError, MissingPartError, PolicyError, ToolError
from imagekit.scan.decision import Decision, decide
from imagekit.scan.findings import parse_report
from imagekit.scan.policy import Policy
from imagekit.scan.report import atomic_dir, render_summary
from imagekit.scan.status import PASSED, PASSED_UNCHECKED, RecordedStatus, ScanRecord, record
from imagekit.scan.trivy import DbInfo, Trivy, trivy_binary

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
    db: DbInfo | None
    """None: no vulnerability DB, vulnerabilities not checked."""
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
    def vulnerabilities_checked(self) -> bool:
        return self.db is not None

    @property
    def status(self) -> RecordedStatus:
        if not self.passed:
            return "failed"
        return PASSED if self.vulnerabilities_checked else PASSED_UNCHECKED

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
    vulnerability_db_required: bool = True,
    processor_skip: tuple[str, ...] = (),
    trivy: str | None = None,
    engine: Engine,
) -> ScanResult:
    """Scan an image of `engine` (docker, podman or buildah); return its result if it passed, raise
    ScanFailed if not. The image is exported as a docker-archive into a temporary directory under
    `data_dir` (images can be larger than the system's /tmp), which is removed afterwards.

    Relative paths are read against the working directory of the caller. `processor_skip` names
    subdirectories of `processor_dir` not searched for secrets (imagekit's rendered build context).
    Raises MissingPartError/ToolError (exit 1) for a missing (when required), unreachable or stale DB
    or a Trivy failure, InputError (exit 2) for bad arguments, ScanFailed, a PolicyError (exit 3),
    when the gate fails.
    """
    _check_inputs(name, version, dockerfile, processor_dir)
    repository = db_repository.strip()
    if not repository and vulnerability_db_required:
        raise MissingPartError(
            "the Trivy vulnerability DB",
            "set scan.trivy_db_repository in the profile to <registry>/<repository>:<tag> holding a "
            'trivy-db OCI artifact; scan.vulnerability_db is "required", so no scan passes without '
            'one (a site without a DB mirror may set it to "when-available": the status then says '
            '"passed, vulnerabilities not checked")',
        )
    reports_root, cache_dir, data_dir = reports_root.resolve(), cache_dir.resolve(), data_dir.resolve()
    dockerfile = dockerfile.resolve() if dockerfile is not None else None
    processor_dir = processor_dir.resolve() if processor_dir is not None else None
    digest = engine.image_id(image)
    if digest is None:
        raise InputError(f"scan: image {image} is not in the local engine ({engine.name}); build it first")
    final = reports_root / name / version
    data_dir.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="imagekit-scan-") as work,
        tempfile.TemporaryDirectory(prefix=".scan-export-", dir=data_dir) as exported,
    ):
        runner = Trivy(trivy or trivy_binary(), cache_dir, Path(work))
        trivy_version = runner.version()
        db = runner.fetch_db(repository, max_age_days=policy.max_db_age_days) if repository else None
        archive = Path(exported) / "image.tar"
        engine.export(image, f"docker-archive:{archive}")
        with atomic_dir(final) as staging:
            report = runner.scan_image(
                archive, image, staging / REPORT_FILES["image"], vulnerabilities=db is not None
            )
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
                secrets = runner.scan_secrets(
                    processor_dir, staging / REPORT_FILES["processor"], skip=processor_skip
                )
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
            status=result.status,
            rule=result.decision.rule,
            scanned_at=result.scanned_at,
            valid_until=result.decision.valid_until,
            reports=str(final),
            db_repository=db.repository if db else None,
            db_updated_at=db.updated_at if db else None,
        ),
    )
    if not result.passed:
        raise ScanFailed(result)
    return result

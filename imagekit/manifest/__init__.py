"""processor.yaml: load, validate and describe the manifest (step 1 of the flow).

Public surface: `load_manifest`, `validate_paths`, `scaffold`, `json_schema`, `LoadedManifest`,
`ChecksumCache`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from imagekit.errors import InputError, ManifestError
from imagekit.manifest.checks import check
from imagekit.manifest.checksums import ChecksumCache
from imagekit.manifest.loader import MANIFEST_NAME, MAX_BYTES, find_manifest, read_document
from imagekit.manifest.messages import SUPPORTED_SCHEMA_VERSIONS, check_schema_version, validate_model
from imagekit.manifest.model import Processor, json_schema, json_schema_text
from imagekit.manifest.scaffold import scaffold

__all__ = [
    "MANIFEST_NAME",
    "MAX_BYTES",
    "SUPPORTED_SCHEMA_VERSIONS",
    "ChecksumCache",
    "LoadedManifest",
    "Processor",
    "json_schema",
    "json_schema_text",
    "load_manifest",
    "scaffold",
    "validate_paths",
]


@dataclass(frozen=True)
class LoadedManifest:
    """A validated manifest and where it came from."""

    processor: Processor
    path: Path
    directory: Path
    sha256: str


def load_manifest(
    path: Path | str,
    *,
    release: bool = False,
    checksums: ChecksumCache | None = None,
    bases: str | None = None,
) -> LoadedManifest:
    """Load a processor directory or its processor.yaml; raise ManifestError with every problem.

    `release` (a git tag or `--release`) applies the release rules. `checksums` also compares each
    local COTS archive with its sha256 (render compares while copying, but without line and column).
    `bases`, the site's `<registry>/<project>/base` (catalog.site_bases), is where a `base.image`
    must come from; without it, any `.../base/<profile>` repository is taken as a catalog base.
    """
    file = find_manifest(Path(path))
    document = read_document(file)
    findings = check_schema_version(document.data)
    processor = None
    if not findings:
        processor, model_findings = validate_model(document.data)
        findings = [
            *document.findings,
            *model_findings,
            *check(document.data, file.parent, release=release, checksums=checksums, bases=bases),
        ]
    if findings or processor is None:
        raise document.error(findings)
    ci_project_url = os.environ.get("CI_PROJECT_URL", "")
    if ci_project_url and not processor.processor.source_url:
        info = processor.processor.model_copy(update={"source_url": ci_project_url})
        processor = processor.model_copy(update={"processor": info})
    return LoadedManifest(processor, file, file.parent, hashlib.sha256(document.raw).hexdigest())


def validate_paths(
    paths: list[Path], *, data_dir: Path, bases: str | None = None, release: bool = False
) -> list[tuple[Path, ManifestError | InputError | None]]:
    """`imagekit validate PATH...`: each processor found, with its error or None when valid.

    A path is a processor.yaml, a processor directory, or a directory of processor directories.
    Archive checksums are cached in `data_dir`, the one place validation writes to; `bases` as in
    `load_manifest`.
    """
    checksums = ChecksumCache(data_dir)
    results: list[tuple[Path, ManifestError | InputError | None]] = []
    for path in map(Path, paths):
        try:
            files = _manifests_at(path)
        except InputError as exc:
            results.append((path, exc))
            continue
        for file in files:
            try:
                load_manifest(file, release=release, checksums=checksums, bases=bases)
            except InputError as exc:
                results.append((file, exc))
            else:
                results.append((file, None))
    checksums.save()
    return results


def _manifests_at(path: Path) -> list[Path]:
    if path.is_dir() and not (path / MANIFEST_NAME).exists():
        found = sorted(path.glob(f"*/{MANIFEST_NAME}"))
        if not found:
            raise InputError(f"{path}: no {MANIFEST_NAME} in this directory nor in its subdirectories")
        return found
    return [find_manifest(path)]

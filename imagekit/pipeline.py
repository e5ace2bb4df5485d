"""The commands that chain steps: manifest → render → build → smoke test.

Each step stays in its own package; this module only passes one step's output to the next, so the
CLI can stay a thin parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from imagekit.catalog import site_bases
from imagekit.config import Profile
from imagekit.engines import BuiltImage, Engine, LogSink, engine_for
from imagekit.errors import InputError, SmokeTestError
from imagekit.manifest import ChecksumCache, LoadedManifest, load_manifest
from imagekit.render import WORK_DIR, RenderResult, SourceInfo, default_render_dir
from imagekit.render import render_processor as render_one
from imagekit.render.source import UNKNOWN_REVISION
from imagekit.scan import PROCESSOR_POLICY_FILE, ScanResult, default_policy_path, load_policy, scan_image
from imagekit.smoke import SmokeOutcome, run_smoke_tests


@dataclass(frozen=True)
class BuildOutcome:
    manifest: LoadedManifest
    rendered: RenderResult
    source: SourceInfo
    image: BuiltImage


def version_image(manifest: LoadedManifest) -> str:
    """The local image of the manifest's version, `<name>:<version>`."""
    return f"{manifest.processor.processor.name}:{manifest.processor.processor.version}"


def image_of(target: str) -> str:
    """The image a command means: a processor directory's version image, or the image named."""
    return version_image(load_manifest(target)) if Path(target).is_dir() else target


def local_tags(manifest: LoadedManifest, source: SourceInfo) -> list[str]:
    """`<name>:<version>`, plus `<name>:git-<short sha>` when the processor is under git."""
    tags = [version_image(manifest)]
    if source.revision != UNKNOWN_REVISION:
        tags.append(f"{manifest.processor.processor.name}:git-{source.short}")
    return tags


def render_processor(
    directory: Path,
    profile: Profile,
    out_dir: Path | None = None,
    *,
    release: bool = False,
    target: Literal["docker", "apptainer"] = "docker",
    image_ref: str = "",
) -> tuple[LoadedManifest, SourceInfo, RenderResult]:
    """Render as the profile's site builds: COTS archives hashed (cached in the data directory), and a
    `base.image` checked against the site's registry."""
    rendered = render_one(
        directory,
        out_dir,
        data_dir=profile.data_dir,
        site=profile.site,
        release=release,
        target=target,
        image_ref=image_ref,
        checksums=ChecksumCache(profile.data_dir),
        bases=site_bases(profile.registry.url, profile.registry.project),
    )
    return rendered.manifest, rendered.source, rendered.result


def build_processor(
    directory: Path,
    profile: Profile,
    *,
    on_line: LogSink,
    release: bool = False,
    engine: Engine | None = None,
    no_cache: bool = False,
) -> BuildOutcome:
    """Render, then build on the profile's engine; the full log is kept beside the rendered files."""
    manifest, source, rendered = render_processor(directory, profile, release=release)
    engine = engine or engine_for(profile)
    image = engine.build(
        rendered.context_dir,
        local_tags(manifest, source),
        log_file=manifest.directory / WORK_DIR / "build.log",
        on_line=on_line,
        no_cache=no_cache,
        source_date_epoch=source.epoch,
    )
    return BuildOutcome(manifest, rendered, source, image)


def smoke_test_processor(
    directory: Path, profile: Profile, *, engine: Engine | None = None
) -> tuple[LoadedManifest, list[SmokeOutcome]]:
    """Run the manifest's smoke tests in the image built for its version; raise if any fails."""
    manifest = load_manifest(directory)
    engine = engine or engine_for(profile)
    image = version_image(manifest)
    if not engine.exists(image):
        raise InputError(f"{image} is not built on {engine.name}: run `imagekit build {directory}` first")
    outcomes = run_smoke_tests(engine, image, manifest.processor)
    return manifest, outcomes


def require_all_passed(image: str, outcomes: list[SmokeOutcome]) -> None:
    failed = [o.test.name for o in outcomes if not o.passed]
    if failed:
        raise SmokeTestError(
            f"{image}: {len(failed)} of {len(outcomes)} smoke tests failed: {', '.join(failed)}"
        )


def scan_target(
    target: str, profile: Profile, *, reports_root: Path, engine: Engine | None = None
) -> ScanResult:
    """Scan a processor's built image with its rendered Dockerfile and directory, or any local image,
    on the profile's engine (docker, podman or buildah).

    Raises ScanFailed (exit 3) after writing the reports and the status when the policy says no.
    """
    site_policy = Path(profile.scan.policy) if profile.scan.policy else default_policy_path()
    override: Path | None = None
    dockerfile: Path | None = None
    processor_dir: Path | None = None
    if Path(target).is_dir():
        manifest = load_manifest(target)
        name, version = manifest.processor.processor.name, manifest.processor.processor.version
        image = version_image(manifest)
        processor_dir = manifest.directory
        override = processor_dir / PROCESSOR_POLICY_FILE
        dockerfile = default_render_dir(manifest) / "Dockerfile"
        if not dockerfile.is_file():
            raise InputError(f"{dockerfile} is missing: run `imagekit build {target}` first")
    else:
        image = target
        repository, _, version = target.rpartition(":")
        if not repository or "/" in version:
            raise InputError(f"{target}: expected a processor directory or an image as name:version")
        name = repository.rsplit("/", 1)[-1]
    return scan_image(
        image,
        name=name,
        version=version,
        dockerfile=dockerfile,
        processor_dir=processor_dir,
        policy=load_policy(site_policy, override if override and override.is_file() else None),
        db_repository=profile.scan.trivy_db_repository,
        reports_root=reports_root,
        cache_dir=profile.data_dir / "trivy",
        data_dir=profile.data_dir,
        vulnerability_db_required=profile.scan.vulnerability_db == "required",
        processor_skip=(WORK_DIR,),
        engine=engine or engine_for(profile),
    )

"""Push a local image: blobs the registry lacks, the manifest by digest, the scan artifact, then the
tags, each set only if absent. A version tag is never overwritten, not even for a moment.

The window between "tag absent" and "tag set" is one HEAD/PUT round trip: a concurrent push of the
same version with other content in that window is detected right after (the tag is re-read) and
reported, but the OCI API offers no conditional PUT to close it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagekit.config import Profile
from imagekit.engines import Engine, engine_for
from imagekit.errors import InputError, PolicyError
from imagekit.registry.attach import Mode
from imagekit.registry.channels import version_of
from imagekit.registry.client import RegistryClient
from imagekit.registry.layout import LocalImage, export
from imagekit.registry.names import git_tag, repository
from imagekit.registry.scanstate import attach_scan, read_scan
from imagekit.scan import require_passed
from imagekit.scan.status import PASSED, PASSED_UNCHECKED, lookup

Log = Callable[[str], None]
TITLE = "org.opencontainers.image.title"
VERSION = "org.opencontainers.image.version"
REVISION = "org.opencontainers.image.revision"


@dataclass(frozen=True)
class PushResult:
    repository: str
    """`<registry>/<project>/<name>`."""
    digest: str
    tags: tuple[str, ...]
    already_there: bool
    uploaded_bytes: int
    uploaded_blobs: int
    skipped_blobs: int
    seconds: float
    scan_status: str
    attached_via: Mode | None


def _name_and_version(local: LocalImage) -> tuple[str, str]:
    labels = local.labels
    reference = local.image.rsplit("/", 1)[-1]
    name, _, tag = reference.partition(":")
    name, version = labels.get(TITLE) or name, labels.get(VERSION) or tag
    if not version or version == "latest":
        raise InputError(f"{local.image}: no version (label {VERSION} or a version tag) to push it as")
    return name, version


def _same_image(client: RegistryClient, repo: str, digest: str, local: LocalImage) -> bool:
    """Same manifest, or the same config (identical layer contents, compressed by another tool version)."""
    if digest == local.manifest.digest:
        return True
    there = client.manifest(repo, digest).json()
    return bool(there.get("config", {}).get("digest") == local.config_digest)


def _refuse(host_repo: str, tag: str, there: str, ours: str) -> PolicyError:
    return PolicyError(
        f"{host_repo}:{tag} already exists as {there}; this image is {ours}: versions are immutable",
        hint="give the processor a new version in processor.yaml and build again",
    )


def push(
    image: str,
    profile: Profile,
    *,
    skip_reason: str | None = None,
    reports_root: Path = Path("scans"),
    log: Log = lambda _m: None,
    git_only: bool = False,
    engine: Engine | None = None,
) -> PushResult:
    """Push a local image as `<version>` and `git-<sha>` (only `git-<sha>` with `git_only`, as the
    default branch does: its release tags the version later); exit 3 if unscanned or the version differs."""
    start = time.monotonic()
    engine = engine or engine_for(profile)  # docker, podman or buildah: the gate reads its image id
    status = require_passed(image, profile.data_dir, skip_reason=skip_reason, engine=engine)
    record = lookup(image, profile.data_dir, engine=engine)
    with tempfile.TemporaryDirectory(prefix="imagekit-push-") as work:
        log(f"reading {image} from {engine.name}")
        local = export(image, engine, Path(work) / "oci")
        name, version = _name_and_version(local)
        repo = repository(profile, name)
        where = f"{profile.registry.url}/{repo}"
        tags = [version] + [t for t in [git_tag(local.labels.get(REVISION, ""))] if t]
        if git_only:
            if len(tags) == 1:
                raise InputError(f"{image} has no git revision label: it cannot be pushed as git-<sha> only")
            tags = tags[1:]
        with RegistryClient.from_profile(profile, push=True) as client:
            existing = {tag: client.manifest_digest(repo, tag) for tag in tags}
            for tag, there in existing.items():
                if there and not _same_image(client, repo, there, local):
                    raise _refuse(where, tag, there, local.manifest.digest)
            if existing[tags[0]]:
                return PushResult(
                    where, str(existing[tags[0]]), tuple(tags), True, 0, 0, 0,
                    time.monotonic() - start, status, None,
                )  # fmt: skip
            sent = uploaded = skipped = 0
            for blob in local.blobs:
                if client.has_blob(repo, blob.digest):
                    skipped += 1
                    continue
                log(f"uploading {blob.digest[:19]} ({blob.size} bytes)")
                sent += client.upload_blob(repo, blob.digest, blob.path)
                uploaded += 1
            manifest = local.manifest
            client.put_manifest(repo, manifest.digest, manifest.raw, manifest.media_type)
            reports = Path(record.reports) if record else reports_root / name / version
            mode = attach_scan(
                client, repo, manifest, status=status, record=record, reports=reports, skip_reason=skip_reason
            )
            for tag in reversed(tags):  # git-<sha> first, the version last
                if existing[tag]:
                    continue
                if (there := client.manifest_digest(repo, tag)) and there != manifest.digest:
                    raise _refuse(where, tag, there, manifest.digest)
                client.put_manifest(repo, tag, manifest.raw, manifest.media_type)
                if (after := client.manifest_digest(repo, tag)) != manifest.digest:
                    raise _refuse(where, tag, str(after), manifest.digest)
    return PushResult(
        where, manifest.digest, tuple(tags), False, sent, uploaded, skipped,
        time.monotonic() - start, status, mode,
    )  # fmt: skip


def tag_existing(profile: Profile, name: str, version: str, source_tag: str) -> PushResult:
    """Tag the image the registry holds as `source_tag` (a commit's `git-<sha>`) as `version`: a release
    of exactly the digest that was scanned and pushed, with no rebuild and no upload. Refuses a source
    that is missing (exit 2), labelled with another version (exit 2) or without a passed scan in the
    registry (exit 3); an existing version is a no-op if it is that digest, else exit 3."""
    start = time.monotonic()
    repo = repository(profile, name)
    where = f"{profile.registry.url}/{repo}"
    with RegistryClient.from_profile(profile, push=True) as client:
        source = client.find_manifest(repo, source_tag)
        if source is None:
            raise InputError(
                f"{where}:{source_tag} does not exist: push that commit first (its default-branch pipeline)"
            )
        labelled = version_of(client, repo, source, "")
        if labelled != version:
            raise InputError(f"{where}:{source_tag} is version '{labelled}', not {version}: nothing tagged")
        scan = read_scan(client, repo, source.digest)
        if scan.status not in (PASSED, PASSED_UNCHECKED) and not scan.skipped:
            raise PolicyError(
                f"{where}:{source_tag} may not become {version}: the registry records its scan as "
                f"'{scan.status}'",
                hint="scan the image and push it again with its scan (imagekit scan, imagekit push)",
            )
        there = client.manifest_digest(repo, version)
        if there is None:
            client.put_manifest(repo, version, source.raw, source.media_type)
            if (after := client.manifest_digest(repo, version)) != source.digest:
                raise _refuse(where, version, str(after), source.digest)
        elif there != source.digest:
            raise _refuse(where, version, there, source.digest)
    return PushResult(
        where, source.digest, (version, source_tag), there is not None, 0, 0, 0,
        time.monotonic() - start, scan.describe(), None,
    )  # fmt: skip

"""What is where, read from the registry and the tree (never local state): receipts for `releases`,
`inspect` for one image and `status` for every processor of the project."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from imagekit import cvmfs, registry
from imagekit.config import Profile
from imagekit.errors import ImagekitError, InputError
from imagekit.scan.status import PASSED, ScanRecord
from imagekit.scan.trivy import DB_LAYER, SCHEMA_VERSION, db_built_at

OCI = "org.opencontainers.image."


def receipts(profile: Profile, name: str, versions: list[str]) -> dict[str, cvmfs.Publication | None]:
    """Each version's CVMFS publication (revision, time, digest), None where it is not published."""
    repository = registry.repository(profile, name)
    return {version: cvmfs.published(profile, repository, version) for version in versions}


class Sbom(BaseModel):
    format: str
    components: int
    by_type: dict[str, int]


class Inspection(BaseModel):
    image: str
    name: str
    version: str
    digest: str
    revision: str
    source: str
    created: str
    manifest_sha256: str
    base: str
    executables: list[dict[str, Any]]
    scan: str
    sbom: Sbom | None
    channels: list[str]
    cvmfs_path: str | None
    cvmfs_revision: int | None
    cvmfs_channels: list[str]


def _parse(profile: Profile, ref: str) -> tuple[str, str | None]:
    ref = ref.removeprefix(profile.registry.url + "/").removeprefix(profile.registry.project + "/")
    name, _, tag = ref.partition(":")
    if not name or "/" in name or "@" in ref:
        raise InputError(f"{ref}: expected NAME[:TAG] or <registry>/<project>/NAME[:TAG]")
    return name, tag or None


def inspect(profile: Profile, ref: str) -> Inspection:
    """One image as a workflow engine or an operator needs it: labels, scan, SBOM, channels, tree."""
    name, tag = _parse(profile, ref)
    found = registry.releases(profile, name)
    if tag is None:
        if not found.versions:
            raise InputError(f"{found.repository} has no versions")
        tag = found.versions[0].version
    repository = registry.repository(profile, name)
    with registry.RegistryClient.from_profile(profile) as client:
        manifest = client.find_manifest(repository, tag)
        if manifest is None:
            raise InputError(f"{found.repository}:{tag} does not exist")
        body = manifest.json()
        labels: dict[str, str] = {}
        config = body.get("config") or {}
        if config.get("digest"):
            with client.blob(repository, str(config["digest"])) as stream:
                labels = (json.loads(stream.read()).get("config") or {}).get("Labels") or {}
        scan = registry.read_scan(client, repository, manifest.digest)
        sbom = registry.read_sbom(client, repository, manifest.digest)
    version = labels.get(OCI + "version", tag)
    publication = cvmfs.published(profile, repository, version)
    return Inspection(
        image=f"{found.repository}:{tag}",
        name=name,
        version=version,
        digest=manifest.digest,
        revision=labels.get(OCI + "revision", ""),
        source=labels.get(OCI + "source", ""),
        created=labels.get(OCI + "created", ""),
        manifest_sha256=labels.get("imagekit.manifest.sha256", ""),
        base=f"{labels.get(OCI + 'base.name', '')}@{labels.get(OCI + 'base.digest', '')}".strip("@"),
        executables=json.loads(labels.get("imagekit.executables", "[]")),
        scan=scan.describe(),
        sbom=_sbom(sbom) if sbom else None,
        channels=[c.channel for c in found.channels if c.digest == manifest.digest],
        cvmfs_path=str(cvmfs.backend_for(profile).root / publication.ref) if publication else None,
        cvmfs_revision=publication.revision if publication else None,
        cvmfs_channels=[
            c for c in profile.release.channels if cvmfs.channel_version(profile, name, c) == version
        ],
    )


def _sbom(data: dict[str, object]) -> Sbom:
    components = data.get("components") or []
    by_type: dict[str, int] = {}
    for component in components if isinstance(components, list) else []:
        kind = str(component.get("type", "?")) if isinstance(component, dict) else "?"
        by_type[kind] = by_type.get(kind, 0) + 1
    spec = data.get("specVersion", "")
    return Sbom(format=f"CycloneDX {spec}".strip(), components=sum(by_type.values()), by_type=by_type)


class StatusRow(BaseModel):
    processor: str
    channel: str
    version: str
    digest: str
    since: str
    scan: str
    cvmfs_version: str | None
    cvmfs_revision: int | None
    problems: list[str]
    vulnerability_db: str = ""
    """Last channel, passed scan: whether the DB it was scanned with is as new as the site's now."""


def status(profile: Profile) -> list[StatusRow]:
    """Every channel of every processor of the project, registry next to tree, inconsistencies flagged:
    also a last-channel image scanned with an older vulnerability DB than a scan would use now."""
    rows = []
    last = profile.release.channels[-1]
    site_db: SiteDb | None = None
    for name in registry.processors(profile):
        found = registry.releases(profile, name)
        scans = {
            v.digest: v.scan_status + (" (gate skipped)" if v.scan_skip_reason else "")
            for v in found.versions
        }
        repository = registry.repository(profile, name)
        channels = {c.channel: c for c in found.channels}
        for channel in profile.release.channels:
            moved = channels.get(channel)
            in_tree = cvmfs.channel_version(profile, name, channel)
            publication = cvmfs.published(profile, repository, in_tree) if in_tree else None
            if moved is None and in_tree is None:
                continue
            problems = []
            tree_digest = publication.manifest_digest if publication else None
            if moved is not None and in_tree is not None and tree_digest != moved.digest:
                problems.append(
                    f"the tree's {channel} is {in_tree} ({(tree_digest or 'incomplete')[:19]}), "
                    f"the registry's {moved.version}"
                )
            if moved is None and in_tree is not None:
                problems.append(f"the tree has {channel} → {in_tree}, the registry has no {channel}")
            scan = scans.get(moved.digest, "not scanned") if moved else ""
            if moved is not None and channel == last and scan != "passed":
                problems.append(f"on {channel} with scan '{scan}'")
            checked = ""
            if moved is not None and channel == last and scan == PASSED:
                site_db = site_db or site_vulnerability_db(profile)
                with registry.RegistryClient.from_profile(profile) as client:
                    record = registry.read_scan_record(client, repository, moved.digest)
                checked, stale = _db_verdict(record, site_db)
                problems += [stale] if stale else []
            rows.append(
                StatusRow(
                    processor=name,
                    channel=channel,
                    version=moved.version if moved else "",
                    digest=moved.digest if moved else "",
                    since=moved.since if moved else "",
                    scan=scan,
                    cvmfs_version=in_tree,
                    cvmfs_revision=publication.revision if publication else None,
                    problems=problems,
                    vulnerability_db=checked,
                )
            )
    return rows


@dataclass(frozen=True)
class SiteDb:
    """When the vulnerability DB a scan would use now was built, or why that is not known."""

    built: datetime | None
    why: str = ""


def site_vulnerability_db(profile: Profile) -> SiteDb:
    """The build time of the DB in `scan.trivy_db_repository`, read from that repository (its
    metadata.json, cached under the data directory by the layer's digest), never Trivy's local cache."""
    reference = profile.scan.trivy_db_repository.strip()
    if not reference:
        return SiteDb(None, "no scan.trivy_db_repository is configured")
    host, _, path = reference.partition("/")
    repository, at, tag = path.partition("@")
    if not at:
        repository, colon, tag = path.rpartition(":")
        repository, tag = (repository, tag) if colon else (path, str(SCHEMA_VERSION))
    try:
        with _db_client(profile, host) as client:
            manifest = client.find_manifest(repository, tag)
            if manifest is None:
                return SiteDb(None, f"{reference} does not exist")
            layers = [
                part for part in manifest.json().get("layers") or [] if part.get("mediaType") == DB_LAYER
            ]
            if not layers:
                return SiteDb(None, f"{reference} is not a Trivy DB (no {DB_LAYER} layer)")
            digest = str(layers[0]["digest"])
            cache = profile.data_dir / "trivy-db-builds" / digest.replace(":", "-")
            try:
                return SiteDb(datetime.fromisoformat(cache.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                pass
            with client.blob(repository, digest) as stream:
                built = db_built_at(stream, reference)
    except ImagekitError as exc:
        return SiteDb(None, exc.message)
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(built.isoformat())
    os.replace(tmp, cache)
    return SiteDb(built)


def _db_client(profile: Profile, host: str) -> registry.RegistryClient:
    """The site registry as the profile says; another registry as Trivy reaches it (plain HTTP on
    loopback, its TRIVY_USERNAME/TRIVY_PASSWORD)."""
    if host == profile.registry.url:
        return registry.RegistryClient.from_profile(profile)
    names = ("TRIVY_USERNAME", "TRIVY_PASSWORD")
    credentials = registry.Credentials(*names, *(os.environ.get(name, "") for name in names))
    loopback = host.startswith(("127.", "localhost:", "[::1]")) or host == "localhost"
    return registry.RegistryClient(host, insecure=loopback, credentials=credentials)


def _db_verdict(record: ScanRecord | None, site: SiteDb) -> tuple[str, str | None]:
    """What to show about the scan's DB, and the problem when it is older than the site's."""
    if site.built is None:
        return f"not checked: {site.why}", None
    scanned = record.db_updated_at if record is not None else None
    if scanned is None:
        return "not checked: the scan record in the registry names no DB build time", None
    scanned, now = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (scanned, site.built))
    if scanned < now:
        return (
            f"older: built {scanned:%Y-%m-%d %H:%M}, the site's {now:%Y-%m-%d %H:%M}",
            f"scanned with a vulnerability DB built {scanned:%Y-%m-%d %H:%M} UTC, older than the site's "
            f"({now:%Y-%m-%d %H:%M} UTC): advisories published since were not checked",
        )
    return f"current: built {scanned:%Y-%m-%d %H:%M}", None

"""`imagekit releases NAME`: versions, digests, push time, git revision, scan status, and which channel
points where since when, read from the registry alone (tags, attached scan artifacts, history). A
commit pushed as `git-<sha>` only (the default branch) is listed under that tag while a channel holds it."""

from __future__ import annotations

import json

from pydantic import BaseModel

from imagekit.config import Profile
from imagekit.registry.channels import Move, history
from imagekit.registry.client import RegistryClient
from imagekit.registry.names import GIT_TAG, HISTORY_SUFFIX, repository, version_tags
from imagekit.registry.scanstate import read_scan

REVISION_LABEL = "org.opencontainers.image.revision"


class VersionRow(BaseModel):
    version: str
    digest: str
    pushed_at: str
    pushed_by: str
    revision: str
    scan_status: str
    scan_skip_reason: str
    channels: list[str]


class ChannelRow(BaseModel):
    channel: str
    version: str
    digest: str
    since: str
    by: str


class Releases(BaseModel):
    repository: str
    versions: list[VersionRow]
    channels: list[ChannelRow]
    history: list[dict[str, str]]


def _revision(client: RegistryClient, repo: str, digest: str, tags_of: dict[str, list[str]]) -> str:
    git = [t for t in tags_of.get(digest, []) if GIT_TAG.match(t)]
    manifest = client.manifest(repo, digest).json()
    config = manifest.get("config") or {}
    if config.get("digest") and int(config.get("size", 0)) < 4 * 1024 * 1024:
        with client.blob(repo, str(config["digest"])) as stream:
            labels = (json.loads(stream.read()).get("config") or {}).get("Labels") or {}
        if labels.get(REVISION_LABEL):
            return str(labels[REVISION_LABEL])
    return git[0][4:] if git else ""


def _git_tags(tags_of: dict[str, list[str]], digest: str | None) -> list[str]:
    return [t for t in tags_of.get(digest or "", []) if GIT_TAG.match(t)]


def processors(profile: Profile) -> list[str]:
    """The processor names of the profile's registry project (from the registry's catalog)."""
    prefix = profile.registry.project + "/"
    listed: list[str] = []
    with RegistryClient.from_profile(profile) as client:
        while True:  # the registry pages its catalog (at most 1000 a page here)
            last = f"&last={listed[-1]}" if listed else ""
            page = client.request("GET", f"/v2/_catalog?n=1000{last}").json().get("repositories") or []
            listed += page
            if len(page) < 1000:
                break
    return sorted(r[len(prefix) :] for r in listed if r.startswith(prefix) and not r.endswith(HISTORY_SUFFIX))


def releases(profile: Profile, name: str) -> Releases:
    repo = repository(profile, name)
    channels = profile.release.channels
    with RegistryClient.from_profile(profile) as client:
        tags = client.tags(repo)
        digests = {tag: client.manifest_digest(repo, tag) for tag in tags if not tag.startswith("sha256-")}
        tags_of: dict[str, list[str]] = {}
        for tag, digest in digests.items():
            if digest:
                tags_of.setdefault(digest, []).append(tag)
        moves: list[Move] = history(client, profile, name)
        named = sorted(version_tags(tags, channels), key=_version_key, reverse=True)
        # a commit the default branch pushed as git-<sha> only, while a channel holds it: its own row
        held = {digests.get(c) for c in channels} - {None} - {digests.get(v) for v in named}
        named += sorted(min(_git_tags(tags_of, d)) for d in held if _git_tags(tags_of, d))
        versions = []
        for version in named:
            digest = digests.get(version)
            if not digest:
                continue
            scan = read_scan(client, repo, digest)
            versions.append(
                VersionRow(
                    version=version,
                    digest=digest,
                    pushed_at=scan.pushed_at,
                    pushed_by=scan.pushed_by,
                    revision=_revision(client, repo, digest, tags_of),
                    scan_status=scan.status,
                    scan_skip_reason=scan.skip_reason,
                    channels=[t for t in channels if t in tags_of.get(digest, [])],
                )
            )
    by_digest = {row.digest: row.version for row in versions}
    rows = []
    for channel in channels:
        digest = digests.get(channel)
        if digest is None:
            continue
        last = next((m for m in reversed(moves) if m.channel == channel and m.digest == digest), None)
        rows.append(
            ChannelRow(
                channel=channel,
                version=by_digest.get(digest, last.version if last else ""),
                digest=digest,
                since=last.at if last else "",
                by=last.by if last else "",
            )
        )
    return Releases(
        repository=f"{profile.registry.url}/{repo}",
        versions=versions,
        channels=rows,
        history=[m.__dict__ for m in moves],
    )


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Numeric parts compare as numbers: 1.10.0 after 1.9.0."""
    parts = version.replace("-", ".").split(".")
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in parts)

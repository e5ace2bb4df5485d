"""Channels: promote and rollback move a channel tag with one PUT of the exact manifest bytes the
registry serves for the version; every move is one immutable history entry in the registry.

The history lives beside the processor's repository (`<project>/<name>.history`), one tiny OCI
artifact per move, tagged with a sortable unique id. Writers never rewrite a shared document, so two
operators promoting at once both keep their entry; readers find entries by listing tags.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from imagekit.config import Profile
from imagekit.errors import InputError, PolicyError, ToolError
from imagekit.registry.attach import CREATED, Part, put_artifact
from imagekit.registry.client import DIGEST, OCI_MANIFEST, Manifest, RegistryClient
from imagekit.registry.names import history_repository, now, repository, who
from imagekit.registry.scanstate import RegistryScan, read_scan
from imagekit.scan.status import PASSED, PASSED_UNCHECKED

HISTORY_ARTIFACT = "application/vnd.imagekit.history.v1+json"
ENTRY_KEY = "imagekit.history.entry"
VERSION_LABEL = "org.opencontainers.image.version"
Action = Literal["promote", "rollback"]
Log = Callable[[str], None]


@dataclass(frozen=True)
class Move:
    """One history entry: a channel was moved to a digest."""

    id: str
    channel: str
    action: str
    version: str
    digest: str
    previous_version: str
    previous_digest: str
    by: str
    at: str


@dataclass(frozen=True)
class MoveResult:
    move: Move | None
    """None when the channel already pointed there (nothing moved, nothing recorded)."""
    channel: str
    version: str
    """The version, or the reference that names the image when no version tag holds it (`name_of`)."""
    digest: str
    scan: RegistryScan
    seconds: float
    label: str = ""
    """The image's version label, shown beside a `version` that is not that version's tag."""


def check_channel(profile: Profile, channel: str) -> None:
    if channel not in profile.release.channels:
        raise InputError(
            f"channel '{channel}' is not one of release.channels ({', '.join(profile.release.channels)})"
        )


def name_of(
    client: RegistryClient, profile: Profile, name: str, manifest: Manifest, reference: str, *, label: str
) -> str:
    """What a move calls its target: its version (`label`) when that version's tag holds this digest,
    else the tag it was asked by (`git-<sha>`: the default branch promotes commits that have no
    version tag yet, whatever version their label says), else the name the newest history entry for
    the digest recorded, if that tag still holds it, else the digest itself."""
    repo = repository(profile, name)

    def holds(tag: str) -> bool:
        if not tag or DIGEST.match(tag) or tag in profile.release.channels:
            return False
        return tag == reference or client.manifest_digest(repo, tag) == manifest.digest

    if holds(label):
        return label
    if holds(reference):
        return reference
    entries = history_repository(profile, name)
    for tag in sorted(client.tags(entries), reverse=True):
        move = _entry(client, entries, tag)
        if move is not None and move.digest == manifest.digest:
            return move.version if holds(move.version) else manifest.digest
    return manifest.digest


def version_of(client: RegistryClient, repo: str, manifest: Manifest, fallback: str) -> str:
    """The version label in the image's config, else the reference it was asked by."""
    config = manifest.json().get("config") or {}
    if manifest.media_type == OCI_MANIFEST or "config" in manifest.json():
        digest = str(config.get("digest", ""))
        if DIGEST.match(digest) and int(config.get("size", 0)) < 4 * 1024 * 1024:
            with client.blob(repo, digest) as stream:
                body = json.loads(stream.read())
            labels = (body.get("config") or {}).get("Labels") or {}
            if labels.get(VERSION_LABEL):
                return str(labels[VERSION_LABEL])
    return fallback


def gate(scan: RegistryScan, channel: str, last: bool, reference: str) -> None:
    """Any channel: a pass (or a recorded skip); the last channel: a pass with vulnerabilities checked."""
    if last and (scan.status != PASSED or scan.skipped):
        why = "its scan gate was skipped" if scan.skipped else f"its scan status is '{scan.status}'"
        raise PolicyError(
            f"{reference} may not go to '{channel}', the last channel: {why}; it needs 'passed' with "
            "vulnerabilities checked (from the report attached in the registry)",
            hint="scan with the site's vulnerability DB, push a new version, and promote that",
        )
    if scan.status not in (PASSED, PASSED_UNCHECKED) and not scan.skipped:
        raise PolicyError(
            f"{reference} may not go to '{channel}': the registry records its scan as '{scan.status}'",
            hint="scan the image and push it again with its scan (imagekit scan, imagekit push)",
        )


def history(client: RegistryClient, profile: Profile, name: str) -> list[Move]:
    """Every recorded move of the processor's channels, oldest first."""
    repo = history_repository(profile, name)
    return [move for tag in sorted(client.tags(repo)) if (move := _entry(client, repo, tag)) is not None]


def _entry(client: RegistryClient, repo: str, tag: str) -> Move | None:
    manifest = client.find_manifest(repo, tag)
    entry = (manifest.json().get("annotations") or {}).get(ENTRY_KEY) if manifest else None
    return Move(**{**json.loads(entry), "id": tag}) if entry else None


def _record(client: RegistryClient, profile: Profile, name: str, move: Move) -> None:
    body = json.dumps({k: v for k, v in asdict(move).items() if k != "id"}, sort_keys=True)
    annotations = {ENTRY_KEY: body, CREATED: move.at}
    part = Part("move.json", "application/json", body.encode())
    put_artifact(
        client, history_repository(profile, name), HISTORY_ARTIFACT, [part], annotations, tag=move.id
    )


def _entry_id() -> str:
    """Sortable (UTC time to the microsecond) and unique (random suffix): one tag per move."""
    stamp = now().replace("-", "").replace(":", "").replace(".", "")
    return f"{stamp}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Target:
    """What a channel would point to, its scan gate passed."""

    version: str
    digest: str
    scan: RegistryScan


def _target(
    client: RegistryClient, profile: Profile, name: str, reference: str, channel: str
) -> tuple[Manifest, str, str, RegistryScan]:
    repo = repository(profile, name)
    where = f"{profile.registry.url}/{repo}"
    target = client.find_manifest(repo, reference)
    if target is None:
        raise InputError(f"{where}:{reference} does not exist: nothing moved")
    label = version_of(client, repo, target, "")
    version = name_of(client, profile, name, target, reference, label=label)
    scan = read_scan(client, repo, target.digest)
    at = "@" if DIGEST.match(version) else ":"
    gate(scan, channel, channel == profile.release.channels[-1], f"{where}{at}{version}")
    return target, version, label, scan


def resolve(profile: Profile, name: str, reference: str, channel: str) -> Target:
    """The version and digest `channel` would move to, after the gate, moving nothing: lets a caller
    that moves other things with the channel (the CVMFS tree) check first."""
    check_channel(profile, channel)
    with RegistryClient.from_profile(profile) as client:
        target, version, _label, scan = _target(client, profile, name, reference, channel)
    return Target(version, target.digest, scan)


def move_channel(
    profile: Profile, name: str, reference: str, channel: str, *, action: Action, log: Log = lambda _m: None
) -> MoveResult:
    """Point `channel` at `reference` (version, git-<sha> or digest) after checking the registry's
    record of its scan; exit 2 for an unknown reference or channel, 3 when the gate says no."""
    start = time.monotonic()
    check_channel(profile, channel)
    repo = repository(profile, name)
    where = f"{profile.registry.url}/{repo}"
    with RegistryClient.from_profile(profile, push=True) as client:
        target, version, label, scan = _target(client, profile, name, reference, channel)
        previous = client.find_manifest(repo, channel)
        if previous is not None and previous.digest == target.digest:
            return MoveResult(None, channel, version, target.digest, scan, time.monotonic() - start, label)
        previous_version = (
            name_of(
                client, profile, name, previous, previous.digest, label=version_of(client, repo, previous, "")
            )
            if previous
            else ""
        )
        log(f"moving {where}:{channel} to {version} ({target.digest})")
        client.put_manifest(repo, channel, target.raw, target.media_type)
        if client.manifest_digest(repo, channel) != target.digest:
            raise ToolError(f"{where}:{channel} does not point to {target.digest} after the PUT")
        move = Move(
            id=_entry_id(),
            channel=channel,
            action=action,
            version=version,
            digest=target.digest,
            previous_version=previous_version,
            previous_digest=previous.digest if previous else "",
            by=who(),
            at=now(),
        )
        try:
            _record(client, profile, name, move)
        except ToolError as exc:
            raise ToolError(
                f"{where}:{channel} moved to {version}, but its history entry was not written: {exc.message}",
                hint="run the same command again: the move is a no-op and the entry is written then",
            ) from exc
    return MoveResult(move, channel, version, target.digest, scan, time.monotonic() - start, label)


def promote(
    profile: Profile, name: str, reference: str, channel: str, *, log: Log = lambda _m: None
) -> MoveResult:
    return move_channel(profile, name, reference, channel, action="promote", log=log)


def rollback(
    profile: Profile, name: str, channel: str, *, to: str | None = None, log: Log = lambda _m: None
) -> MoveResult:
    """Back to `to`, or by default to what the channel held before its last move."""
    to = to or previous_digest(profile, name, channel)
    return move_channel(profile, name, to, channel, action="rollback", log=log)


def previous_digest(profile: Profile, name: str, channel: str) -> str:
    """What the channel held before its last move, from the history; exit 2 when none is recorded."""
    check_channel(profile, channel)
    repo = repository(profile, name)
    with RegistryClient.from_profile(profile) as client:
        current = client.manifest_digest(repo, channel)
        if current is None:
            raise InputError(f"{profile.registry.url}/{repo}:{channel} does not exist: nothing to roll back")
        moves = [m for m in history(client, profile, name) if m.channel == channel and m.digest == current]
    if not moves or not moves[-1].previous_digest:
        raise InputError(
            f"{profile.registry.url}/{repo}:{channel}: the history records no earlier version; "
            "name one with --to VERSION"
        )
    return moves[-1].previous_digest

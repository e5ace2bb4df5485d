"""Promote and rollback for a processor: the registry channel and the CVMFS channel symlink together.

The tree moves first (one symlink flip, cheap to put back), the registry second; when the registry
fails, the tree is put back. The scan gate is checked before either moves. A version not published
to CVMFS moves the registry alone, and the result says so.
"""

from __future__ import annotations

import copy
import fcntl
from collections.abc import Callable
from dataclasses import dataclass

from imagekit import cvmfs, registry
from imagekit.config import Profile
from imagekit.errors import ImagekitError

Log = Callable[[str], None]


@dataclass(frozen=True)
class ChannelMove:
    registry: registry.MoveResult
    cvmfs: str
    """What happened in the tree: "moved from X", "already there", or why it was left alone."""


def promote(
    profile: Profile, name: str, ref: str, channel: str, *, log: Log = lambda _m: None
) -> ChannelMove:
    return _move(profile, name, ref, channel, "promote", log)


def rollback(
    profile: Profile, name: str, channel: str, *, to: str | None = None, log: Log = lambda _m: None
) -> ChannelMove:
    """Back to `to`, or to what the registry's history says the channel held before its last move (read
    under the lock: a rollback running meanwhile may have moved the channel but not yet recorded it)."""
    return _move(profile, name, to, channel, "rollback", log)


def _move(profile: Profile, name: str, ref: str | None, channel: str, action: str, log: Log) -> ChannelMove:
    """One channel move of a processor at a time: the registry has no compare-and-swap, so two moves
    at once could leave the tree at one version and the registry at the other, and a history entry
    naming a stale `previous`. Under the lock each reads and moves both sides in turn."""
    lock = profile.data_dir / "locks" / f"{profile.registry.project}+{name}.channels"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another promote or rollback of {name} to finish (lock {lock})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        if ref is None:
            ref = registry.previous_digest(profile, name, channel)
        return _move_locked(profile, name, ref, channel, action, log)


def _move_locked(profile: Profile, name: str, ref: str, channel: str, action: str, log: Log) -> ChannelMove:
    target = registry.resolve(profile, name, ref, channel)  # the gate: nothing has moved yet
    repository = registry.repository(profile, name)
    publication = cvmfs.published(profile, repository, target.version)
    if publication is None or publication.manifest_digest != target.digest:
        moved = _registry_move(profile, name, ref, channel, action, log)
        left = cvmfs.channel_version(profile, name, channel)
        return ChannelMove(
            moved,
            f"not published to CVMFS ({profile.cvmfs.backend} {profile.cvmfs.repository}): the registry "
            f"moved alone; the tree's {channel} is {left or 'unset'}",
        )
    before = cvmfs.channel_version(profile, name, channel)
    if before != target.version:
        log(f"moving the CVMFS channel {channel} of {name} to {target.version}")
        cvmfs.move_channel(profile, name, channel, target.version, log)
    try:
        moved = _registry_move(profile, name, ref, channel, action, log)
    except ImagekitError as failed:
        if before == target.version or _registry_points_to(profile, name, channel, target.digest):
            raise  # the registry did move (only its history entry failed): both sides agree
        raise _put_back(profile, name, channel, before, failed, log) from failed
    state = "already there" if before == target.version else f"moved from {before or 'unset'}"
    return ChannelMove(moved, state)


def _registry_move(
    profile: Profile, name: str, ref: str, channel: str, action: str, log: Log
) -> registry.MoveResult:
    if action == "rollback":
        return registry.rollback(profile, name, channel, to=ref, log=log)
    return registry.promote(profile, name, ref, channel, log=log)


def _registry_points_to(profile: Profile, name: str, channel: str, digest: str) -> bool:
    try:
        with registry.RegistryClient.from_profile(profile) as client:
            return client.manifest_digest(registry.repository(profile, name), channel) == digest
    except ImagekitError:
        return False


def _put_back(
    profile: Profile, name: str, channel: str, before: str | None, failed: ImagekitError, log: Log
) -> ImagekitError:
    """The tree's channel back where it was; the registry's error, saying so."""
    try:
        if before is None:
            cvmfs.clear_channel(profile, name, channel, log)
        else:
            cvmfs.move_channel(profile, name, channel, before, log)
        note = f"the CVMFS channel {channel} was put back to {before or 'unset'}: neither side moved"
    except ImagekitError as also:
        note = (
            f"putting the CVMFS channel {channel} back to {before or 'unset'} failed too ({also.message}): "
            f"the tree and the registry disagree; run `imagekit status` and move {channel} again"
        )
    error = copy.copy(failed)
    error.message = f"{failed.message}; {note}"
    error.args = (error.message,)
    return error

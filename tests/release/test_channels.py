"""promote and rollback move the registry channel and the CVMFS channel symlink together, or neither:
against the real registry and a real local tree, with real failures of either side."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from imagekit import cvmfs, release
from imagekit.config import Profile
from imagekit.cvmfs.backends import backend_for
from imagekit.errors import ToolError
from imagekit.registry import RegistryClient
from imagekit.scan.status import PASSED_UNCHECKED

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cvmfs"))

from images import push_scanned_version

pytestmark = [pytest.mark.registry]


def _push(profile: Profile, version: str, *, publish: bool = True) -> str:
    """A tiny scanned image `proc:<version>` in the profile's registry (and tree)."""
    digest = push_scanned_version(profile, version)
    if publish:
        cvmfs.publish(profile, f"proc:{version}", skip_reason="test image")
    return digest


def _registry_channel(profile: Profile, channel: str) -> str | None:
    with RegistryClient.from_profile(profile) as client:
        return client.manifest_digest(f"{profile.registry.project}/proc", channel)


def _tree_channel(profile: Profile, channel: str) -> str:
    link = profile.cvmfs_root / profile.registry.url / f"{profile.registry.project}/proc:{channel}"
    return (link / "opt/VERSION").read_text() if os.path.islink(link) else "unset"


def test_promote_and_rollback_move_both_sides(profile: Profile, registry_cleanup: None) -> None:
    one, two = _push(profile, "1.0"), _push(profile, "1.1")
    first = release.promote(profile, "proc", "1.0", "dev")
    assert first.cvmfs == "moved from unset" and first.registry.digest == one
    assert (_registry_channel(profile, "dev"), _tree_channel(profile, "dev")) == (one, "1.0")

    release.promote(profile, "proc", "1.1", "dev")
    assert (_registry_channel(profile, "dev"), _tree_channel(profile, "dev")) == (two, "1.1")

    back = release.rollback(profile, "proc", "dev")  # to the previous one, from the registry's history
    assert back.cvmfs == "moved from 1.1" and back.registry.move is not None
    assert back.registry.move.action == "rollback"
    assert (_registry_channel(profile, "dev"), _tree_channel(profile, "dev")) == (one, "1.0")

    assert [row.problems for row in release.status(profile) if row.processor == "proc"] == [[]]
    receipts = release.receipts(profile, "proc", ["1.0", "1.1", "9.9"])
    assert receipts["9.9"] is None
    assert receipts["1.1"].revision == 2 and receipts["1.1"].published_at  # type: ignore[union-attr]
    assert receipts["1.1"].manifest_digest == two  # type: ignore[union-attr]


def test_an_unpublished_version_moves_the_registry_alone(profile: Profile, registry_cleanup: None) -> None:
    _push(profile, "1.0")
    two = _push(profile, "2.0", publish=False)
    release.promote(profile, "proc", "1.0", "dev")
    moved = release.promote(profile, "proc", "2.0", "dev")
    assert "not published to CVMFS" in moved.cvmfs and "the tree's dev is 1.0" in moved.cvmfs
    assert (_registry_channel(profile, "dev"), _tree_channel(profile, "dev")) == (two, "1.0")
    rows = [row for row in release.status(profile) if row.processor == "proc"]
    assert [(r.channel, r.version, r.cvmfs_version) for r in rows] == [("dev", "2.0", "1.0")]
    assert rows[0].problems and "the tree's dev is 1.0" in rows[0].problems[0]
    seen = release.inspect(profile, "proc:1.0")
    assert (seen.channels, seen.cvmfs_channels, seen.scan) == ([], ["dev"], PASSED_UNCHECKED)
    assert seen.cvmfs_path and seen.cvmfs_path.endswith(f"{profile.registry.project}/proc:1.0")


def test_a_failing_tree_leaves_the_registry_channel(profile: Profile, registry_cleanup: None) -> None:
    one = _push(profile, "1.0")
    _push(profile, "1.1")
    release.promote(profile, "proc", "1.0", "dev")
    profile.cvmfs.lock_timeout = 0.5
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:  # another publisher holds the tree: the CVMFS side fails for real
        with backend_for(profile).lock(lambda _: None):
            holding.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    try:
        with pytest.raises(ToolError, match="locked"):
            release.promote(profile, "proc", "1.1", "dev")
    finally:
        done.set()
        holder.join()
    assert (_registry_channel(profile, "dev"), _tree_channel(profile, "dev")) == (one, "1.0")


@pytest.mark.parametrize("before", ["1.0", None])
def test_a_stopped_registry_puts_the_tree_back(
    profile: Profile, own_registry: object, before: str | None
) -> None:
    profile.registry.url = own_registry.url  # type: ignore[attr-defined]
    _push(profile, "1.0")
    _push(profile, "1.1")
    if before:
        release.promote(profile, "proc", before, "dev")

    def stop_registry(message: str) -> None:
        if message.startswith("moving the CVMFS channel"):
            own_registry.stop()  # type: ignore[attr-defined]

    with pytest.raises(ToolError) as failed:
        release.promote(profile, "proc", "1.1", "dev", log=stop_registry)
    assert f"the CVMFS channel dev was put back to {before or 'unset'}: neither side moved" in str(
        failed.value.message
    )
    assert _tree_channel(profile, "dev") == (before or "unset")
    own_registry.start()  # type: ignore[attr-defined]
    assert _registry_channel(profile, "dev") == (None if before is None else _digest(profile, "1.0"))


def _digest(profile: Profile, tag: str) -> str | None:
    with RegistryClient.from_profile(profile) as client:
        return client.manifest_digest(f"{profile.registry.project}/proc", tag)

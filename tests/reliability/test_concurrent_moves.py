"""Two promotes, two rollbacks and two publishes of one processor at once, each a process of its own
through the CLI (so whichever code moves the registry and the CVMFS tree together is covered): both
end well, the registry channel and the tree's channel agree, and the history is one unbroken chain
(each move's `previous` is the move before it: no entry lost, none computed from a stale channel)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from images import push_scanned_version
from reliability_parts import Case

from imagekit.config import Profile
from imagekit.cvmfs.layout import tag_rel
from imagekit.registry import RegistryClient, history

pytestmark = [pytest.mark.registry]
ROUNDS = 3


@pytest.fixture
def profile(
    site_profile: Profile, local_env: dict[str, object], tmp_path: Path, test_project: str
) -> Iterator[Profile]:
    copy = site_profile.model_copy(deep=True)
    copy.cvmfs.backend = "local"
    copy.cvmfs.root = str(tmp_path / "tree")
    copy.registry.project = test_project
    copy.paths.data_dir = str(tmp_path / "data")
    yield copy
    with RegistryClient.from_profile(copy) as client:
        catalog = client.request("GET", "/v2/_catalog?n=10000").json().get("repositories") or []
        for repo in catalog:
            if repo.startswith(test_project + "/"):
                for digest in {client.manifest_digest(repo, tag) for tag in client.tags(repo)} - {None}:
                    client.delete_manifest(repo, str(digest))


def _env(profile: Profile) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEKIT_")}
    env.update(
        IMAGEKIT_REGISTRY_URL=profile.registry.url,
        IMAGEKIT_REGISTRY_PROJECT=profile.registry.project,
        IMAGEKIT_PATHS_DATA_DIR=profile.paths.data_dir,
        IMAGEKIT_CVMFS_BACKEND="local",
        IMAGEKIT_CVMFS_ROOT=str(profile.cvmfs_root),
    )
    return env


def _at_once(profile: Profile, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Start every command before waiting for any."""
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "imagekit.cli", *command],
            env=_env(profile),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    done = []
    for command, process in zip(commands, started, strict=True):
        out, err = process.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return done


def _publish_all(profile: Profile, *versions: str) -> None:
    for done in _at_once(
        profile, *(["publish", "--cvmfs", f"proc:{v}", "--skip-scan", "--reason", "t"] for v in versions)
    ):
        assert done.returncode == 0, done.stderr


def _agree(profile: Profile, case: Case, what: str) -> str:
    """The registry's and the tree's `dev` point to the same version, and the history is one chain
    ending there; returns that version."""
    repository = f"{profile.registry.project}/proc"
    with RegistryClient.from_profile(profile) as client:
        registry_digest = client.manifest_digest(repository, "dev")
        moves = [move for move in history(client, profile, "proc") if move.channel == "dev"]
    link = profile.cvmfs_root / tag_rel(profile.registry.url, repository, "dev")
    tree_version = (link / "opt/VERSION").read_text() if os.path.islink(link) else "unset"
    assert moves, "no history"
    if moves[-1].digest != registry_digest or moves[-1].version != tree_version:
        case.lost(
            f"{what}: registry dev {registry_digest}, tree dev {tree_version}, "
            f"last history entry {moves[-1].version} {moves[-1].digest}"
        )
    for before, after in itertools.pairwise(moves):
        if after.previous_digest != before.digest:
            case.lost(
                f"{what}: history entry {after.id} says dev was {after.previous_version}, "
                f"not {before.version}"
            )
    return tree_version


def test_two_promotes_at_once(profile: Profile, case: Case) -> None:
    for version in ("1.0", "1.1", "1.2"):
        push_scanned_version(profile, version)
    _publish_all(profile, "1.0", "1.1", "1.2")
    first = _at_once(profile, ["promote", "proc", "1.0", "--channel", "dev"])[0]
    assert first.returncode == 0, first.stderr
    entries = 1
    for _ in range(ROUNDS):
        results = _at_once(
            profile,
            ["promote", "proc", "1.1", "--channel", "dev"],
            ["promote", "proc", "1.2", "--channel", "dev"],
        )
        for done in results:
            assert done.returncode == 0, done.stderr
        entries += 2
        final = _agree(profile, case, "two promotes")
        assert final in ("1.1", "1.2")
        with RegistryClient.from_profile(profile) as client:
            assert len([m for m in history(client, profile, "proc") if m.channel == "dev"]) == entries
        # the next round starts from 1.0 again, so both promotes move the channel
        reset = _at_once(profile, ["promote", "proc", "1.0", "--channel", "dev"])[0]
        assert reset.returncode == 0, reset.stderr
        entries += 1


def test_two_rollbacks_at_once(profile: Profile, case: Case) -> None:
    for version in ("1.0", "1.1", "1.2"):
        push_scanned_version(profile, version)
    _publish_all(profile, "1.0", "1.1", "1.2")
    for version in ("1.0", "1.1", "1.2"):
        done = _at_once(profile, ["promote", "proc", version, "--channel", "dev"])[0]
        assert done.returncode == 0, done.stderr
    results = _at_once(
        profile, ["rollback", "proc", "--channel", "dev"], ["rollback", "proc", "--channel", "dev"]
    )
    for done in results:
        assert done.returncode == 0, done.stderr
    # both read 1.2 → 1.1 before either moved: the second finds dev there already (one entry); or the
    # second started after the first ended: it undoes that rollback, 1.1 → 1.2 (two entries)
    final = _agree(profile, case, "two rollbacks")
    with RegistryClient.from_profile(profile) as client:
        moves = [m for m in history(client, profile, "proc") if m.channel == "dev"]
    rollbacks = {"1.1": 1, "1.2": 2}[final]
    assert [m.action for m in moves] == ["promote"] * 3 + ["rollback"] * rollbacks


def test_two_publishes_at_once(profile: Profile, case: Case) -> None:
    for version in ("1.0", "1.1"):
        push_scanned_version(profile, version)
    same = _at_once(profile, *(["publish", "--cvmfs", "proc:1.0", "--skip-scan", "--reason", "t"],) * 2)
    for done in same:
        assert done.returncode == 0, done.stderr
    _publish_all(profile, "1.1", "1.1")
    root = profile.cvmfs_root
    repository = f"{profile.registry.project}/proc"
    for version in ("1.0", "1.1"):
        link = root / tag_rel(profile.registry.url, repository, version)
        assert (link / "opt/VERSION").read_text() == version
    revision = (root / ".imagekit/revision.json").read_text()
    assert '"revision": 2' in revision, revision  # the second of each pair was a no-op
    verified = subprocess.run(
        [sys.executable, "-m", "imagekit.cli", "cvmfs", "verify"],
        env=_env(profile),
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr

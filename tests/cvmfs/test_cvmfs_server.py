"""The cvmfs_server backend's command sequences and exit-code handling.

Against the stand-in in standin/ (the observed behaviour of a real Stratum 0); the tree is written and
checked for real on disk. Running the same sequences against a real `cvmfs_server` is not wired yet.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from imagekit import cvmfs
from imagekit.config import Profile
from imagekit.errors import ToolError
from imagekit.registry import RegistryClient

from .images import E, layer, push_layers
from .test_publish_local import BASE, COTS, code, tree_hash

pytestmark = [pytest.mark.registry]
STANDIN = Path(__file__).parent / "standin" / "cvmfs_server"


@pytest.fixture
def server(tree_profile: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Profile, Path]:
    profile = tree_profile.model_copy(deep=True)
    profile.cvmfs.backend = "cvmfs_server"
    profile.cvmfs.repository = "sw.imagekit.test"
    profile.cvmfs.root = str(tmp_path / "cvmfs" / "sw.imagekit.test")
    profile.cvmfs.spool_dir = str(tmp_path / "spool")
    profile.cvmfs.server_binary = str(STANDIN)
    (tmp_path / "spool" / "sw.imagekit.test" / "rdonly").mkdir(parents=True)
    Path(profile.cvmfs.root).mkdir(parents=True)
    log = tmp_path / "calls.log"
    log.touch()
    monkeypatch.setenv("STANDIN_SPOOL", profile.cvmfs.spool_dir)
    monkeypatch.setenv("STANDIN_ROOT", profile.cvmfs.root)
    monkeypatch.setenv("STANDIN_LOG", str(log))
    return profile, log


def _calls(log: Path) -> list[str]:
    calls = log.read_text().splitlines()
    log.write_text("")
    return calls


def test_publish_sequences_and_revisions(
    server: tuple[Profile, Path], registry_client: RegistryClient
) -> None:
    profile, log = server
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, COTS, code("1.0")])
    push_layers(registry_client, repository, "1.1", [BASE, COTS, code("1.1")])

    first = cvmfs.publish(profile, "proc:1.0", skip_reason="test")
    assert _calls(log) == ["transaction sw.imagekit.test", "publish sw.imagekit.test"]
    assert first.publication.revision == 1

    assert cvmfs.publish(profile, "proc:1.0", skip_reason="test").noop
    assert _calls(log) == []

    second = cvmfs.publish(profile, "proc:1.1", skip_reason="test")
    calls = _calls(log)
    template = f"/{second.publication.incremental_from}=/{second.publication.flat}"
    assert calls == [f"transaction -T {template} sw.imagekit.test", "publish sw.imagekit.test"]
    assert "//" not in calls[0] and not template.endswith("/")
    assert second.publication.revision == 2 and second.publication.layers_applied == 1
    assert cvmfs.verify(profile).problems == {}

    assert cvmfs.move_channel(profile, "proc", "production", "1.1") is None
    assert _calls(log) == ["transaction sw.imagekit.test", "publish sw.imagekit.test"]


def test_failed_publish_is_aborted_and_reports_its_own_error(
    server: tuple[Profile, Path], registry_client: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile, log = server
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, code("1.0")])
    push_layers(registry_client, repository, "2.0", [BASE, code("2.0"), layer(E("extra", "f", "x"))])
    cvmfs.publish(profile, "proc:1.0", skip_reason="test")
    _calls(log)
    root = Path(profile.cvmfs.root)
    before = tree_hash(root)
    monkeypatch.setenv("STANDIN_FAIL_PUBLISH", "cannot publish: open file handles under /cvmfs")
    expected = "publish sw.imagekit.test failed: exit 1: cannot publish: open file handles"
    with pytest.raises(ToolError, match=re.escape(expected)):
        cvmfs.publish(profile, "proc:2.0", skip_reason="test")
    assert _calls(log)[-2:] == ["publish sw.imagekit.test", "abort -f sw.imagekit.test"]
    assert tree_hash(root) == before
    assert not (Path(profile.cvmfs.spool_dir) / "sw.imagekit.test" / "in_transaction.lock").exists()


def test_an_open_transaction_from_a_crash_is_aborted_first(
    server: tuple[Profile, Path], registry_client: RegistryClient
) -> None:
    profile, log = server
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, code("1.0")])
    os.system(f"STANDIN_LOG=/dev/null {STANDIN} transaction sw.imagekit.test")  # a run that died inside
    assert cvmfs.publish(profile, "proc:1.0", skip_reason="test").publication.revision == 1
    assert _calls(log) == [
        "abort -f sw.imagekit.test",
        "transaction sw.imagekit.test",
        "publish sw.imagekit.test",
    ]

"""The cvmfs_server backend's command sequences and exit-code handling, on the stand-in and on a real
`cvmfs_server`.

`standin`: standin/cvmfs_server, the behaviour observed on a real Stratum 0 (CVMFS 2.11.5 and 2.12); the
tree is written and checked for real on disk. `real`: the cvmfs_server on PATH (or
IMAGEKIT_CVMFS_SERVER_BINARY) with a repository of the test's own, made by `cvmfs_server mkfs` as
`imagekit dev up` makes it and removed by `rmfs` afterwards; skipped with one line where none is
installed, also under CI (Debian has no cvmfs-server package and CERN's repository cannot be reached from
these machines). Both are called through a shim that logs each call, so the same sequences are asserted
on both.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from imagekit import cvmfs
from imagekit.config import Profile
from imagekit.cvmfs import stream
from imagekit.cvmfs.backends import BUCKETS, CvmfsServerBackend, Revision, backend_for
from imagekit.cvmfs.index import DIR, FILE, SYMLINK, Entry, Index
from imagekit.cvmfs.verify import compare_structure
from imagekit.devenv import cvmfs as devenv_cvmfs
from imagekit.errors import ToolError
from imagekit.registry import RegistryClient
from imagekit.resources import data_path

from .images import E, layer, push_layers
from .test_publish_local import BASE, COTS, code, tree_hash

pytestmark = [pytest.mark.registry]
STANDIN = Path(__file__).parent / "standin" / "cvmfs_server"
NO_REAL_SERVER = "no real cvmfs_server installed (put one on PATH or set IMAGEKIT_CVMFS_SERVER_BINARY)"
# Logs each call, then runs the server; `publish` from IMAGEKIT_TEST_PUBLISH_CWD when set, and the n-th
# call of a command (IMAGEKIT_TEST_FAIL=<command>:<n>, counted since the log was read) from
# IMAGEKIT_TEST_FAIL_CWD (a cwd under /cvmfs/<repo> is what makes a real publish or ingest fail).
SHIM = """#!/bin/sh
echo "$*" >> '{log}'
if [ "$1" = publish ] && [ -n "${{IMAGEKIT_TEST_PUBLISH_CWD:-}}" ]; then cd "$IMAGEKIT_TEST_PUBLISH_CWD"; fi
if [ "$1:$(grep -c "^$1 " '{log}')" = "${{IMAGEKIT_TEST_FAIL:-}}" ]; then cd "$IMAGEKIT_TEST_FAIL_CWD"; fi
exec '{server}' "$@"
"""


@dataclass(frozen=True)
class Server:
    profile: Profile
    server: str
    """The stand-in or the real cvmfs_server itself, for what another process would do (not logged)."""
    log: Path
    gc_allowed: bool
    """Whether the repository's server.conf lets `cvmfs_server gc` run (the stand-in has none)."""

    @property
    def repository(self) -> str:
        return self.profile.cvmfs.repository

    @property
    def root(self) -> Path:
        return backend_for(self.profile).root

    @property
    def spool(self) -> Path:
        return Path(self.profile.cvmfs.spool_dir) / self.repository

    def calls(self) -> list[str]:
        calls = self.log.read_text().splitlines()
        self.log.write_text("")
        return calls

    def revision(self) -> int:
        return (backend_for(self.profile).revision() or Revision(0, "")).number


def _shim(tmp_path: Path, server: str) -> tuple[str, Path]:
    log = tmp_path / "calls.log"
    log.touch()
    shim = tmp_path / "cvmfs_server"
    shim.write_text(SHIM.format(log=log, server=server))
    shim.chmod(0o755)
    return str(shim), log


@pytest.fixture(params=["standin", pytest.param("real", marks=pytest.mark.cvmfs_server)])
def server(
    request: pytest.FixtureRequest,
    tree_profile: Profile,
    site_profile: Profile,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Server]:
    profile = tree_profile.model_copy(deep=True)
    profile.cvmfs.backend = "cvmfs_server"
    if request.param == "standin":
        profile.cvmfs.repository = "sw.imagekit.test"
        profile.cvmfs.root = str(tmp_path / "cvmfs" / "sw.imagekit.test")
        profile.cvmfs.spool_dir = str(tmp_path / "spool")
        (tmp_path / "spool" / "sw.imagekit.test" / "rdonly").mkdir(parents=True)
        Path(profile.cvmfs.root).mkdir(parents=True)
        monkeypatch.setenv("STANDIN_SPOOL", profile.cvmfs.spool_dir)
        monkeypatch.setenv("STANDIN_ROOT", profile.cvmfs.root)
        monkeypatch.delenv("STANDIN_LOG", raising=False)
        profile.cvmfs.server_binary, log = _shim(tmp_path, str(STANDIN))
        backend = CvmfsServerBackend(profile)  # the buckets, as create_repository makes them
        with backend.lock(lambda _: None):
            backend.prepare(lambda _: None, layers=False)
        log.write_text("")
        yield Server(profile, str(STANDIN), log, gc_allowed=False)
        return
    binary = devenv_cvmfs.server_binary(site_profile)
    if binary is None:
        pytest.skip(NO_REAL_SERVER)  # the one allowed skip under CI: no machine here can install it
    repository = f"imagekit-{uuid.uuid4().hex[:8]}.test"
    profile.cvmfs.repository = repository
    profile.cvmfs.root = ""  # /cvmfs/<repository>; the spool is the site's (/var/spool/cvmfs)
    devenv_cvmfs.create_repository(binary, repository, lambda _: None)
    try:
        profile.cvmfs.server_binary, log = _shim(tmp_path, binary)
        yield Server(profile, binary, log, gc_allowed=True)
    finally:
        subprocess.run([binary, "rmfs", "-f", repository], capture_output=True, check=False, cwd="/")


def _publish(profile: Profile, ref: str) -> cvmfs.PublishResult:
    return cvmfs.publish(profile, ref, skip_reason="test")


def _full(repo: str) -> list[str]:
    """The calls of a full publish: the flat (and the chain snapshot, when the image has one) ingested
    in one go, then one transaction for its index and the metadata."""
    return [f"ingest -t - -b / -k {repo}", f"transaction {repo}", f"publish {repo}"]


def test_publish_code_only_version_and_channel_flip(server: Server, registry_client: RegistryClient) -> None:
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, COTS, code("1.0")])
    push_layers(registry_client, repository, "1.1", [BASE, COTS, code("1.1")])
    start = server.revision()

    first = _publish(profile, "proc:1.0")
    assert server.calls() == _full(repo)
    assert first.publication.revision == start + 2 == server.revision()

    assert _publish(profile, "proc:1.0").noop
    assert server.calls() == []

    v1_flat = server.root / first.publication.flat
    before = tree_hash(v1_flat)
    second = _publish(profile, "proc:1.1")
    calls = server.calls()
    template = f"/{second.publication.incremental_from}=/{second.publication.flat}"
    # `-T` needs the destination's parent: every .flat/<xx> bucket exists since the repository was made
    assert calls == [f"transaction -T {template} {repo}", f"publish {repo}"]
    assert "//" not in calls[-2] and not template.endswith("/")
    # the clone is a revision of its own (committed when `-T` opens), then the publish
    assert second.publication.revision == start + 4 == server.revision()
    assert second.publication.layers_applied == 1
    assert second.publication.bytes_written < 20_000  # the code layer and .singularity.d, never the COTS
    assert tree_hash(v1_flat) == before
    assert (server.root / second.publication.flat / "opt/processor/VERSION").read_text() == "1.1"
    assert cvmfs.verify(profile).problems == {}

    assert cvmfs.move_channel(profile, "proc", "production", "1.1") is None
    assert server.calls() == [f"transaction {repo}", f"publish {repo}"]
    channel = server.root / profile.registry.url / f"{repository}:production"
    assert (channel / "opt/processor/VERSION").read_text() == "1.1"


def test_failed_publish_is_aborted_and_reports_its_own_error(
    server: Server, registry_client: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, code("1.0")])
    push_layers(registry_client, repository, "2.0", [BASE, code("2.0"), layer(E("extra", "f", "x"))])
    _publish(profile, "proc:1.0")
    server.calls()
    before, revision = tree_hash(server.root), server.revision()
    monkeypatch.setenv("IMAGEKIT_TEST_PUBLISH_CWD", str(server.root))
    expected = f"publish {repo} failed: exit 1: Current working directory is in /cvmfs/{repo}."
    with pytest.raises(ToolError, match=re.escape(expected)):
        _publish(profile, "proc:2.0")
    assert server.calls()[-2:] == [f"publish {repo}", f"abort -f {repo}"]
    assert tree_hash(server.root) == before and server.revision() == revision
    assert not (server.spool / "in_transaction.lock").exists()
    assert cvmfs.published(profile, repository, "2.0") is None


def test_a_failed_code_only_version_is_aborted_with_its_clone(
    server: Server, registry_client: RegistryClient
) -> None:
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, COTS, code("1.0")])
    bad = layer(E("opt/../../x", "f", "x"))
    push_layers(registry_client, repository, "2.0", [BASE, COTS, code("2.0"), bad])
    _publish(profile, "proc:1.0")
    server.calls()
    before, revision = tree_hash(server.root), server.revision()
    with pytest.raises(cvmfs.UnsafeLayer):
        _publish(profile, "proc:2.0")
    calls = server.calls()
    assert calls[0].startswith("transaction -T /.imagekit/chains/")
    assert calls == [calls[0], f"abort -f {repo}"]  # the abort takes the clone's revision back too
    assert tree_hash(server.root) == before
    assert server.revision() == revision
    assert not (server.spool / "in_transaction.lock").exists()


def test_an_open_transaction_from_a_crash_is_aborted_first(
    server: Server, registry_client: RegistryClient
) -> None:
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, code("1.0")])
    start = server.revision()
    died = subprocess.run([server.server, "transaction", repo], capture_output=True, text=True, cwd="/")
    assert died.returncode == 0, died.stderr
    (server.root / "left-by-the-crash").write_text("half")  # what the run wrote before it died
    again = subprocess.run([server.server, "transaction", repo], capture_output=True, text=True, cwd="/")
    assert again.returncode == 17  # what imagekit reports as "another transaction is open"

    assert _publish(profile, "proc:1.0").publication.revision == start + 2
    assert server.calls() == [f"abort -f {repo}", *_full(repo)]
    assert not (server.root / "left-by-the-crash").exists()
    assert cvmfs.verify(profile).problems == {}


def test_every_bucket_is_made_once_in_one_transaction(
    server: Server, registry_client: RegistryClient
) -> None:
    """`transaction -T` needs the clone's parent: every `.flat/<xx>` exists from the start (made by
    create_repository, or by the first publication to a repository that lacks them, with `.layers/<xx>`
    when the profile wants them), each with its catalog, so no version waits for a bucket of its own."""
    profile, repo = server.profile, server.repository
    root, backend = server.root, CvmfsServerBackend(profile)
    assert sorted(os.listdir(root / ".flat")) == BUCKETS and not (root / ".layers").exists()
    assert all((root / ".flat" / bucket / ".cvmfscatalog").is_file() for bucket in BUCKETS)
    assert (root / ".cvmfsdirtab").is_file()
    with backend.lock(lambda _: None), backend.transaction(lambda _: None) as txn:
        txn.remove(".flat")  # a repository from before imagekit made its buckets
        txn.write_file(".cvmfsdirtab", b"/.flat/*\n/.flat/*/*\n")  # and its dirtab then
    server.calls()

    profile.cvmfs.layers = True
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, code("1.0")])
    lines: list[str] = []
    flat = cvmfs.publish(profile, "proc:1.0", skip_reason="test", log=lines.append).publication.flat
    once = [f"transaction {repo}", f"publish {repo}"]
    assert server.calls() == [*once, *once]  # the buckets, then the publication (with .layers: in place)
    assert f"{repo}: making its 512 missing bucket directories and .cvmfsdirtab (once)" in lines
    assert (root / ".cvmfsdirtab").read_bytes() == data_path("cvmfs/cvmfsdirtab").read_bytes()
    for top in (".flat", ".layers"):
        assert sorted(os.listdir(root / top)) == BUCKETS
        assert all((root / top / bucket / ".cvmfscatalog").is_file() for bucket in BUCKETS)
        st = os.lstat(root / top / BUCKETS[0])
        assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)) == (0, 0, "0o755")
    assert (root / flat / "opt/processor/VERSION").read_text() == "1.0"
    assert cvmfs.verify(profile).problems == {}


def test_a_held_lock_stops_a_concurrent_publish(server: Server, registry_client: RegistryClient) -> None:
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, code("1.0")])
    profile.cvmfs.lock_timeout = 0.5
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with backend_for(profile).lock(lambda _: None):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    try:
        with pytest.raises(ToolError, match=rf"{re.escape(repo)} is locked by pid \d+"):
            _publish(profile, "proc:1.0")
        assert server.calls() == []  # nothing reached cvmfs_server while another publisher held the lock
    finally:
        release.set()
        holder.join()
    _publish(profile, "proc:1.0")
    assert server.calls() == _full(repo)


def test_rollback_and_gc(server: Server, registry_client: RegistryClient) -> None:
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/proc"
    for version in ("1.0", "1.1", "1.2"):
        push_layers(registry_client, repository, version, [BASE, COTS, code(version)])
        _publish(profile, f"proc:{version}")
        time.sleep(1.1)  # publication times are to the second
    server.calls()
    assert cvmfs.move_channel(profile, "proc", "production", "1.0") is None
    assert cvmfs.move_channel(profile, "proc", "production", "1.1") == "1.0"
    revision = server.revision()
    assert cvmfs.move_channel(profile, "proc", "production", "1.0") == "1.1"  # rollback: one flip
    assert server.calls()[-2:] == [f"transaction {repo}", f"publish {repo}"]
    assert server.revision() == revision + 1
    channel = server.root / profile.registry.url / f"{repository}:production"
    assert (channel / "opt/processor/VERSION").read_text() == "1.0"

    lines: list[str] = []
    plan, verified = cvmfs.gc(profile, 1, dry_run=False, log=lines.append)
    assert [Path(t).name for t in plan.tags] == ["proc:1.1"]  # 1.2 newest, 1.0 on a channel
    assert verified is not None and verified.problems == {}
    gc_call = [f"gc -f {repo}"] if server.gc_allowed else []
    assert server.calls() == [f"transaction {repo}", f"publish {repo}", *gc_call]
    assert server.gc_allowed or any("does not allow garbage collection" in line for line in lines)
    assert cvmfs.published(profile, repository, "1.1") is None
    assert not os.path.lexists(server.root / profile.registry.url / f"{repository}:1.1")
    assert (channel / "opt/processor/VERSION").read_text() == "1.0"
    assert sorted(os.listdir(server.root / ".flat")) == BUCKETS  # gc keeps the emptied buckets


OWNED = layer(
    E("home", "d", mode=0o755),
    E("home/user", "d", mode=0o750, uid=1000, gid=100),
    E("home/user/data", "f", "mine", 0o640, uid=1000, gid=100),
    E("home/user/same", "h", "home/user/data", 0o640, uid=1000, gid=100),
    E("usr", "d", mode=0o755),
    E("usr/bin", "d", mode=0o755),
    E("usr/bin/su", "f", "su", 0o4755),
    E("usr/bin/sh", "l", "su"),
)


def test_a_full_publish_is_ingested_with_owners_kept(
    server: Server, registry_client: RegistryClient, tree_profile: Profile
) -> None:
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/owned"
    push_layers(registry_client, repository, "1.0", [BASE, OWNED])
    flat = _publish(profile, "owned:1.0").publication.flat
    assert server.calls() == _full(repo)
    for parent in (".flat", str(Path(flat).parent), ".imagekit", ".imagekit/chains"):
        st = os.lstat(server.root / parent)  # from the tar's own entries, not made by ingest (nobody)
        assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)) == (0, 0, "0o755"), parent

    local = _publish(tree_profile, "owned:1.0").publication.flat  # the local backend, file by file
    assert local == flat
    ingested, written = server.root / flat, Path(tree_profile.cvmfs.root) / flat
    assert tree_hash(ingested) == tree_hash(written)
    for rel in ("", "home/user", "home/user/data", "usr/bin/su"):
        got, want = os.lstat(ingested / rel), os.lstat(written / rel)
        assert (got.st_mode, got.st_uid, got.st_gid) == (want.st_mode, want.st_uid, want.st_gid), rel
    assert os.lstat(ingested / "home/user/data")[4:6] == (1000, 100)
    assert cvmfs.verify(profile).problems == {}


def test_a_failed_ingest_leaves_nothing_and_the_next_publish_works(
    server: Server, registry_client: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, COTS, code("1.0")])
    before, revision = tree_hash(server.root), server.revision()
    monkeypatch.setenv("IMAGEKIT_TEST_FAIL", "ingest:1")
    monkeypatch.setenv("IMAGEKIT_TEST_FAIL_CWD", str(server.root))
    cwd = rf"Current working directory is in /cvmfs/{re.escape(repo)}\."
    with pytest.raises(ToolError, match=rf"cvmfs_server ingest {re.escape(repo)} failed: exit 1: .*{cwd}"):
        _publish(profile, "proc:1.0")
    # ingest's own abort could not unmount the file system its cwd held: imagekit aborts
    assert server.calls() == [f"ingest -t - -b / -k {repo}", f"abort -f {repo}"]
    assert tree_hash(server.root) == before and server.revision() == revision
    assert not (server.spool / "in_transaction.lock").exists()
    assert not (server.spool / "imagekit.pending").exists()

    monkeypatch.delenv("IMAGEKIT_TEST_FAIL")
    again = _publish(profile, "proc:1.0")
    assert server.calls() == _full(repo)
    assert cvmfs.verify(profile).problems == {}
    assert (server.root / again.publication.flat / "opt/processor/VERSION").read_text() == "1.0"


def test_a_failure_while_streaming_stops_ingest_and_leaves_nothing(
    server: Server, registry_client: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layers are read while ingest takes the tar: when that fails (here: the registry goes away at
    the COTS file's bytes), ingest is stopped before it could publish, and its transaction aborted; the
    error reported is the original one."""
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, COTS, code("1.0")])
    before, revision = tree_hash(server.root), server.revision()
    sent = stream._TarOut.data

    def registry_gone(self: stream._TarOut, chunks: Iterable[bytes], size: int, name: str) -> str:
        if name.endswith("opt/cots/lib.so"):
            raise ToolError("test: the registry went away")
        return sent(self, chunks, size, name)

    with monkeypatch.context() as failing, pytest.raises(ToolError, match=r"^test: the registry went away$"):
        failing.setattr(stream._TarOut, "data", registry_gone)
        _publish(profile, "proc:1.0")
    calls = server.calls()  # an abort only when ingest had opened its transaction before it was stopped
    assert calls in ([f"ingest -t - -b / -k {repo}"], [f"ingest -t - -b / -k {repo}", f"abort -f {repo}"])
    assert tree_hash(server.root) == before and server.revision() == revision
    assert not (server.spool / "in_transaction.lock").exists()
    assert not (server.spool / "imagekit.pending").exists()

    again = _publish(profile, "proc:1.0")
    assert server.calls() == _full(repo)
    assert cvmfs.verify(profile).problems == {}
    assert (server.root / again.publication.flat / "opt/processor/VERSION").read_text() == "1.0"


def test_an_image_the_one_reading_cannot_send_is_sent_again_into_a_fresh_ingest(
    server: Server, registry_client: RegistryClient
) -> None:
    """A hard link that changes the mode of a lower layer's file makes the flat hold its contents under
    two modes; the one reading sent them under one. Its ingest is stopped and aborted, and the plan is
    sent by a second reading into a fresh ingest: the publication is whole, and the chain snapshot keeps
    the lower layer's mode."""
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/proc"
    private = layer(E("opt/cots/lib-private.so", "h", "opt/cots/lib.so", 0o700))
    push_layers(registry_client, repository, "1.0", [BASE, COTS, code("1.0"), private])
    lines: list[str] = []

    published = cvmfs.publish(profile, "proc:1.0", skip_reason="test", log=lines.append)

    calls = [call for call in server.calls() if call != f"abort -f {repo}"]  # abort: if it had opened one
    assert calls == [f"ingest -t - -b / -k {repo}", *_full(repo)]
    why = f"/{published.publication.flat}/opt/cots/lib.so: {stream.OTHER_NAMES}"
    assert f"{why}: sending it again from its plan" in lines
    assert any(line.startswith("sending layer") for line in lines)
    assert cvmfs.verify(profile).problems == {}
    flat = server.root / published.publication.flat
    assert [(flat / "opt/cots" / name).stat().st_mode & 0o777 for name in ("lib.so", "lib-private.so")] == [
        0o700,
        0o700,
    ]
    chains = [path for path in (server.root / ".imagekit/chains").iterdir() if path.is_dir()]
    assert [(chain / "opt/cots/lib.so").stat().st_mode & 0o777 for chain in chains] == [0o755]
    assert not (server.spool / "in_transaction.lock").exists()


def test_a_failure_after_the_ingest_removes_what_it_landed(
    server: Server, registry_client: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, COTS, code("1.0")])
    before, revision = tree_hash(server.root), server.revision()
    monkeypatch.setenv("IMAGEKIT_TEST_FAIL", "publish:1")  # the metadata's publish
    monkeypatch.setenv("IMAGEKIT_TEST_FAIL_CWD", str(server.root))
    with pytest.raises(ToolError, match=rf"publish {re.escape(repo)} failed: exit 1: Current working"):
        _publish(profile, "proc:1.0")
    assert server.calls() == [
        *_full(repo),
        f"abort -f {repo}",
        *[f"transaction {repo}", f"publish {repo}"],  # the flat, its chain snapshot, their parents removed
    ]
    assert tree_hash(server.root) == before and server.revision() == revision + 2
    assert not (server.spool / "imagekit.pending").exists()
    assert cvmfs.published(profile, repository, "1.0") is None
    monkeypatch.delenv("IMAGEKIT_TEST_FAIL")
    _publish(profile, "proc:1.0")
    assert cvmfs.verify(profile).problems == {}


def test_a_flat_that_lands_other_than_its_index_is_removed_and_nothing_published(
    server: Server, registry_client: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks where the flat landed run while the metadata's transaction opens: a difference (here
    the tar gives one file another mode than its index says) aborts that transaction before any
    metadata or tag, and what ingest landed is removed."""
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, COTS, code("1.0")])
    before, revision = tree_hash(server.root), server.revision()
    entry = stream._TarOut.entry

    def another_mode(self: stream._TarOut, name: str, kind: bytes, e: Entry, t: float, **rest: Any) -> None:
        if name.endswith("/opt/processor/VERSION"):
            e = replace(e, mode=0o600)
        entry(self, name, kind, e, t, **rest)

    differs = r"VERSION: mode 0o600, expected 0o644"
    with monkeypatch.context() as changed, pytest.raises(ToolError, match=differs):
        changed.setattr(stream._TarOut, "entry", another_mode)
        _publish(profile, "proc:1.0")
    assert server.calls() == [
        f"ingest -t - -b / -k {repo}",
        f"transaction {repo}",
        f"abort -f {repo}",
        *[f"transaction {repo}", f"publish {repo}"],  # the flat, its chain snapshot, their parents removed
    ]
    assert tree_hash(server.root) == before and server.revision() == revision + 2
    assert not (server.spool / "imagekit.pending").exists()
    assert cvmfs.published(profile, repository, "1.0") is None
    _publish(profile, "proc:1.0")
    assert cvmfs.verify(profile).problems == {}


def test_what_an_interrupted_ingest_left_is_removed_by_the_next_run(
    server: Server, registry_client: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, COTS, code("1.0")])
    # a run that dies after the flat was ingested, before it could remove it: its note stays
    with monkeypatch.context() as dying:
        dying.setattr(CvmfsServerBackend, "_undo_pending", lambda self, log: None)
        dying.setenv("IMAGEKIT_TEST_FAIL", "publish:1")
        dying.setenv("IMAGEKIT_TEST_FAIL_CWD", str(server.root))
        with pytest.raises(ToolError):
            _publish(profile, "proc:1.0")
    pending = (server.spool / "imagekit.pending").read_text().splitlines()
    flat = next(line.split()[1] for line in pending if line.startswith("tree .flat/"))
    assert (server.root / flat).is_dir() and cvmfs.published(profile, repository, "1.0") is None
    server.calls()

    lines: list[str] = []
    again = cvmfs.publish(profile, "proc:1.0", skip_reason="test", log=lines.append)
    calls = server.calls()
    # first the flat and its parents removed in one transaction, then the publication from scratch
    assert calls[:2] == [f"transaction {repo}", f"publish {repo}"]
    assert any(line.startswith("removing what a publication that did not complete made") for line in lines)
    assert calls[2:] == _full(repo)
    assert not (server.spool / "imagekit.pending").exists()
    assert cvmfs.verify(profile).problems == {}
    assert (server.root / again.publication.flat / "opt/processor/VERSION").read_text() == "1.0"


def test_a_reboot_leaves_the_repository_unmounted_and_the_next_publish_mounts_it(
    server: Server, registry_client: RegistryClient
) -> None:
    if server.server == str(STANDIN):
        pytest.skip("the stand-in has no mounts: a real cvmfs_server's repository only")
    profile, repo = server.profile, server.repository
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, code("1.0")])
    flat = _publish(profile, "proc:1.0").publication.flat
    server.calls()
    # what a reboot leaves: upstream's /etc/fstab lines are `noauto`, nothing mounts them again
    for mount in (server.root, server.spool / "rdonly"):
        subprocess.run(["umount", str(mount)], check=True, capture_output=True)
    assert cvmfs.published(profile, repository, "1.0") is None  # the tree is out of sight

    lines: list[str] = []
    again = cvmfs.publish(profile, "proc:1.0", skip_reason="test", log=lines.append)
    assert again.noop  # found published once mounted again, not published a second time
    assert server.calls() == [f"mount {repo}"]
    assert any(f"{repo} is not mounted" in line for line in lines)
    assert os.path.ismount(server.root) and os.path.ismount(server.spool / "rdonly")
    assert (server.root / flat / "opt/processor/VERSION").read_text() == "1.0"
    assert cvmfs.verify(profile).problems == {}


def test_the_landed_check_compares_structure_and_reads_only_the_files_it_is_told(tmp_path: Path) -> None:
    """What a full publication checks where ingest landed the flat, and a code-only version in its
    clone: every entry's structure; contents only of `full` (CVMFS checks the rest by hash on read)."""
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True, mode=0o755)
    (tree / "d" / "f").write_bytes(b"abc")
    os.chmod(tree / "d" / "f", 0o644)
    os.symlink("f", tree / "d" / "l")
    index = Index()
    index.put("d", Entry(DIR, 0o755, os.getuid(), os.getgid()))
    sha = hashlib.sha256(b"abc").hexdigest()
    index.put("d/f", Entry(FILE, 0o644, os.getuid(), os.getgid(), size=3, sha256=sha))
    index.put("d/l", Entry(SYMLINK, 0o777, os.getuid(), os.getgid(), target="f"))
    assert compare_structure(index, tree) == []

    (tree / "d" / "f").write_bytes(b"xyz")  # same size, other content: not read unless named
    assert compare_structure(index, tree) == []
    assert compare_structure(index, tree, full={"d/f"}) == ["/d/f: content differs from the layers"]
    os.chmod(tree / "d" / "f", 0o600)
    (tree / "d" / "extra").write_text("")
    (tree / "d" / "l").unlink()
    assert compare_structure(index, tree) == [
        "/d: holds what the image does not: extra",
        "/d/f: mode 0o600, expected 0o644",
        "/d/l: missing (symlink expected)",
    ]


def test_a_clone_is_checked_by_its_listings_and_its_new_entries_in_full(tmp_path: Path) -> None:
    """What a code-only version checks in its clone: every directory's names and types, and the entries
    its new layers wrote (`full`) in structure and content; the cloned rest is not looked up on its own."""
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True, mode=0o755)
    for name, data in (("old", b"old"), ("new", b"new")):
        (tree / "d" / name).write_bytes(data)
        os.chmod(tree / "d" / name, 0o644)
    os.symlink("old", tree / "d" / "l")
    index = Index()
    me = (os.getuid(), os.getgid())
    index.put("d", Entry(DIR, 0o755, *me))
    for name, data in (("old", b"old"), ("new", b"new")):
        index.put(f"d/{name}", Entry(FILE, 0o644, *me, size=3, sha256=hashlib.sha256(data).hexdigest()))
    index.put("d/l", Entry(SYMLINK, 0o777, *me, target="old"))
    assert compare_structure(index, tree, full={"d/new"}, cloned=True) == []

    os.chmod(tree / "d" / "old", 0o600)  # a cloned entry: its metadata is the verified flat's catalog's
    (tree / "d" / "new").write_bytes(b"NEW")
    assert compare_structure(index, tree, full={"d/new"}, cloned=True) == [
        "/d/new: content differs from the layers"
    ]
    (tree / "d" / "l").unlink()
    (tree / "d" / "l").mkdir()
    (tree / "d" / "extra").write_text("")
    (tree / "d" / "old").unlink()
    assert compare_structure(index, tree, full={"d/new"}, cloned=True) == [
        "/d/extra: holds what the image does not",
        "/d/l: is a directory, expected a symlink",
        "/d/old: missing (file expected)",
        "/d/new: content differs from the layers",
    ]

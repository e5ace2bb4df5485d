"""`imagekit publish --cvmfs` killed with SIGKILL at several points, on each backend (`local` for real,
`cvmfs_server` through the stand-in of its observed command sequences): every entry the tree had before
is still there unchanged, the next run on the repository puts the tree back exactly as it was (on
`cvmfs_server` it finds the open transaction and aborts it first), and publishing again succeeds.

The kill points are states of the tree, polled from outside; the product knows nothing of the test.
The two states that last microseconds (the flat's index written but the flat not switched in; the
metadata written but not the tag link) are stretched by running the publisher under `strace`, which
delays every rename and symlink call by a fixed time: the order of the calls is the program's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from images import E, layer, push_layers
from reliability_parts import Case, tree_digest

from imagekit.config import Profile
from imagekit.cvmfs.layout import flat_rel, index_rel, metadata_rel, tag_rel
from imagekit.registry import RegistryClient

pytestmark = [pytest.mark.registry]
STANDIN = Path(__file__).resolve().parents[1] / "cvmfs" / "standin" / "cvmfs_server"
REPO = "sw.imagekit.test"
BIG = os.urandom(48 << 20)  # does not compress: the download lasts
BASE = layer(E("etc", "d", mode=0o755), E("etc/os-release", "f", "ID=test\n"))
LAYERS_V2 = [
    BASE,
    layer(E("opt", "d", mode=0o755), E("opt/big", "f", BIG)),
    layer(E("many", "d", mode=0o755), *(E(f"many/f-{i}", "f", f"{i}\n") for i in range(3000))),
    layer(E("opt/processor", "d", mode=0o755), E("opt/processor/VERSION", "f", "2.0")),
]
SLOW_CALLS = "rename,renameat,renameat2,symlink,symlinkat"


@dataclass
class Site:
    tmp: Path
    backend: str
    root: Path
    registry: str
    project: str
    calls: Path

    @property
    def repository(self) -> str:
        return f"{self.project}/proc"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEKIT_", "STANDIN_"))}
        env.update(
            IMAGEKIT_REGISTRY_URL=self.registry,
            IMAGEKIT_REGISTRY_PROJECT=self.project,
            IMAGEKIT_PATHS_DATA_DIR=str(self.tmp / "data"),
            IMAGEKIT_CVMFS_BACKEND=self.backend,
            IMAGEKIT_CVMFS_ROOT=str(self.root),
        )
        if self.backend == "cvmfs_server":
            env.update(
                IMAGEKIT_CVMFS_REPOSITORY=REPO,
                IMAGEKIT_CVMFS_SPOOL_DIR=str(self.tmp / "spool"),
                IMAGEKIT_CVMFS_SERVER_BINARY=str(STANDIN),
                STANDIN_SPOOL=str(self.tmp / "spool"),
                STANDIN_ROOT=str(self.root),
                STANDIN_LOG=str(self.calls),
            )
        return env

    def command(self, version: str) -> list[str]:
        return [sys.executable, "-m", "imagekit.cli", "publish", "--cvmfs", f"{self.repository}:{version}",
                "--skip-scan", "--reason", "reliability suite: hand-made layers"]  # fmt: skip

    def publish(self, version: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(version), env=self.env(), capture_output=True, text=True)

    def skip(self) -> tuple[Path, ...]:
        """What is not the tree: the local backend's staging area and lock."""
        return (self.root / ".imagekit" / "staging", self.root / ".imagekit" / "lock")


def entries(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int, str]]:
    """Each entry below `root`: mode, size and content (or link target), by relative name."""
    found = {}
    skipped = {str(path) for path in skip}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skipped]
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            if full in skipped:
                continue
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                what = Path(full).read_bytes().hex() if st.st_size < 1 << 16 else str(st.st_ino)
            else:
                what = ""
            found[os.path.relpath(full, root)] = (st.st_mode, st.st_size, what)
    return found


@pytest.fixture(params=["local", "cvmfs_server"])
def site(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    site_profile: Profile,
    local_env: dict[str, object],
    test_project: str,
) -> Iterator[Site]:
    backend = str(request.param)
    (tmp_path / "data").mkdir()
    root = tmp_path / "tree" if backend == "local" else tmp_path / "cvmfs" / REPO
    if backend == "cvmfs_server":
        (tmp_path / "spool" / REPO / "rdonly").mkdir(parents=True)
        root.mkdir(parents=True)
    found = Site(tmp_path, backend, root, site_profile.registry.url, test_project, tmp_path / "calls.log")
    with RegistryClient.from_profile(site_profile) as client:
        push_layers(client, found.repository, "1.0", [BASE, layer(E("opt", "d"), E("opt/v", "f", "1.0"))])
        push_layers(client, found.repository, "2.0", LAYERS_V2)
        try:
            yield found
        finally:
            for tag in client.tags(found.repository):
                digest = client.manifest_digest(found.repository, tag)
                if digest:
                    client.delete_manifest(found.repository, digest)


def _config_hex(site: Site) -> str:
    profile = Profile.model_validate({"registry": {"url": site.registry, "project": site.project}})
    with RegistryClient.from_profile(profile) as client:
        manifest = client.manifest(site.repository, "2.0")
    return str(json.loads(manifest.raw)["config"]["digest"]).split(":", 1)[1]


def _work(site: Site, rel: str) -> list[Path]:
    """`rel` in the flat being built: in the local staging area, or in place on cvmfs_server."""
    return [*site.root.glob(f".imagekit/staging/*/tree-*/{rel}"), *site.root.glob(f".flat/*/*/{rel}")]


def _downloading(site: Site, cfg: str) -> bool:
    return any(0 < path.stat().st_size < len(BIG) for path in _work(site, "opt/big"))


def _flattening(site: Site, cfg: str) -> bool:
    return bool(_work(site, "many/f-1500"))


def _index_not_switched(site: Site, cfg: str) -> bool:
    index = (site.root / index_rel(cfg)).is_file()
    return index and (site.backend == "cvmfs_server" or not (site.root / flat_rel(cfg)).exists())


def _metadata_not_linked(site: Site, cfg: str) -> bool:
    meta = site.root / metadata_rel(site.registry, site.repository, "2.0") / "manifest.json"
    return meta.is_file() and not os.path.lexists(site.root / tag_rel(site.registry, site.repository, "2.0"))


KILL_POINTS: dict[str, tuple[Callable[[Site, str], bool], bool]] = {
    "during the layer download": (_downloading, False),
    "during the flatten": (_flattening, False),
    "after staging, before the switch": (_index_not_switched, True),
    "between metadata and tag link": (_metadata_not_linked, True),
}


def _kill_when(site: Site, state: Callable[[Site, str], bool], slow: bool) -> None:
    """Run `publish 2.0`, SIGKILL it as soon as `state` holds; fail if it ends before that."""
    cfg = _config_hex(site)
    command = site.command("2.0")
    if slow:
        # every rename and symlink of the publisher (its threads and children too) waits 0.3 s first
        command = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={SLOW_CALLS}",
                   "-e", f"inject={SLOW_CALLS}:delay_enter=300000", *command]  # fmt: skip
    out = (site.tmp / "killed.err").open("wb")
    process = subprocess.Popen(command, env=site.env(), stdout=subprocess.DEVNULL, stderr=out)
    deadline = time.monotonic() + 120
    try:
        while not state(site, cfg):
            assert process.poll() is None, (
                "publish ended before the kill point: " + (site.tmp / "killed.err").read_text()
            )
            assert time.monotonic() < deadline, "the kill point never came"
            time.sleep(0.005)
        victim = _publisher(process.pid) if slow else process.pid
        os.kill(victim, signal.SIGKILL)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(_publisher(process.pid) if slow else process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        out.close()
    if not slow:
        assert process.returncode == -signal.SIGKILL


def _publisher(strace: int) -> int:
    """The traced publisher: strace's child (the short-lived probe children it starts first are gone)."""
    children = Path(f"/proc/{strace}/task/{strace}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_sigkill_keeps_the_previous_tree_and_the_next_run_recovers(
    point: str, site: Site, case: Case, require_part: Callable[[str], None]
) -> None:
    state, slow = KILL_POINTS[point]
    if slow and shutil.which("strace") is None:
        require_part("strace is missing (it stretches the short kill points): apt-get install strace")
    first = site.publish("1.0")
    assert first.returncode == 0, first.stderr
    before_entries = entries(site.root, site.skip())
    before = tree_digest(site.root, skip=site.skip())
    site.calls.write_text("")

    _kill_when(site, state, slow)
    after_kill = entries(site.root, site.skip())
    changed = [rel for rel, seen in before_entries.items() if after_kill.get(rel) != seen]
    if changed:
        case.lost(f"killed {point}: entries of the previous tree changed: {sorted(changed)[:5]}")

    killed_calls = len(site.calls.read_text().splitlines())
    recovering = site.publish("1.0")  # a no-op publication: it only recovers, under the lock
    assert recovering.returncode == 0, recovering.stderr
    if tree_digest(site.root, skip=site.skip()) != before:
        case.lost(f"killed {point}: the next run did not put the tree back as it was")
    if site.backend == "cvmfs_server":
        recovery = site.calls.read_text().splitlines()[killed_calls:]
        assert recovery[:1] == [f"abort -f {REPO}"], recovery
        assert "has an open transaction (an interrupted run?): aborting it first" in recovering.stderr
    else:
        assert "removing what an interrupted run left" in recovering.stderr, recovering.stderr
        assert list((site.root / ".imagekit" / "staging").iterdir()) == []

    again = site.publish("2.0")
    assert again.returncode == 0, again.stderr
    link = site.root / tag_rel(site.registry, site.repository, "2.0")
    assert (link / "opt/big").read_bytes() == BIG and (link / "many/f-2999").read_text() == "2999\n"
    assert (site.root / tag_rel(site.registry, site.repository, "1.0") / "opt/v").read_text() == "1.0"
    kept = {rel: seen for rel, seen in before_entries.items() if rel != ".imagekit/revision.json"}
    assert kept.items() <= entries(site.root, site.skip()).items()

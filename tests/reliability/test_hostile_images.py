"""Hostile images pushed to the real registry and published (`imagekit publish --cvmfs`, local backend):
each is refused or neutralised within bounded time, memory and disk, sparse files stay sparse, and
nothing outside the target tree is written (the directories around it are hashed before and after)."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from images import OCI_LAYER, E, layer, push_layers
from registry_parts import OwnRegistry
from reliability_parts import Case

from imagekit.config import Profile
from imagekit.registry import RegistryClient

pytestmark = [pytest.mark.registry]
SECRET = "do not touch"
GIB = 1 << 30


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float


@dataclass
class Site:
    """A local CVMFS tree under tmp_path, a registry project of its own, and the directories around."""

    tmp: Path
    tree: Path
    outside: Path
    registry: str
    project: str
    client: RegistryClient

    def env(self, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEKIT_")}
        env.update(
            IMAGEKIT_REGISTRY_URL=self.registry,
            IMAGEKIT_REGISTRY_PROJECT=self.project,
            IMAGEKIT_CVMFS_BACKEND="local",
            IMAGEKIT_CVMFS_ROOT=str(self.tree),
            IMAGEKIT_PATHS_DATA_DIR=str(self.tmp / "data"),
        )
        env.update({f"IMAGEKIT_CVMFS_{key.upper()}": value for key, value in settings.items()})
        return env

    def push(self, name: str, layers: list[bytes], tag: str = "1.0.0") -> str:
        return push_layers(self.client, f"{self.project}/{name}", tag, layers)

    def publish(self, name: str, tag: str = "1.0.0", **settings: str) -> Run:
        """`imagekit publish --cvmfs` as a process of its own: its time and peak memory are its own."""
        out, err = self.tmp / "publish.out", self.tmp / "publish.err"
        started = time.monotonic()
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "imagekit.cli", "publish", "--cvmfs", f"{self.project}/{name}:{tag}",
                 "--skip-scan", "--reason", "reliability suite: hand-made hostile layers"],
                env=self.env(**settings), cwd=self.tmp, stdout=stdout, stderr=stderr,
            )  # fmt: skip
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        return Run(
            process.returncode,
            out.read_text(),
            err.read_text(),
            seconds,
            usage.ru_maxrss / 1024,
        )


def _delete_project(client: RegistryClient, project: str) -> None:
    catalog = client.request("GET", "/v2/_catalog?n=10000").json().get("repositories") or []
    for repo in catalog:
        if repo.startswith(project + "/"):
            for digest in {client.manifest_digest(repo, tag) for tag in client.tags(repo)} - {None}:
                client.delete_manifest(repo, str(digest))


@pytest.fixture
def site(
    tmp_path: Path, site_profile: Profile, local_env: dict[str, object], test_project: str, case: Case
) -> Iterator[Site]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text(SECRET)
    (tmp_path / "data").mkdir()
    with RegistryClient.from_profile(site_profile) as client:
        found = Site(tmp_path, tmp_path / "tree", outside, site_profile.registry.url, test_project, client)
        case.guard(
            tmp_path, skip=(found.tree, tmp_path / "data", tmp_path / "publish.out", tmp_path / "publish.err")
        )
        try:
            yield found
        finally:
            _delete_project(client, test_project)


def refused(run: Run, *words: str) -> None:
    last = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
    assert run.code == 2, run.stderr
    assert "internal error" not in run.stderr and "Traceback" not in run.stderr
    for word in words:
        assert word in last, last


def nothing_published(site: Site) -> None:
    """A refused publication leaves no tag link, no metadata and no flat behind."""
    for sub in ("registry", ".flat", ".metadata"):
        found = site.tree / sub
        assert not found.exists() or not any(p for p in found.rglob("*") if not p.is_dir()), sorted(
            found.rglob("*")
        )


HOSTILE: dict[str, tuple[Callable[[Site], list[bytes]], tuple[str, ...]]] = {
    "dotdot": (lambda s: [layer(E("../outside/evil", "f", "x"))], ("contains '..'",)),
    "deep dotdot": (lambda s: [layer(E("a/../../../outside/evil", "f", "x"))], ("contains '..'",)),
    "absolute": (lambda s: [layer(E(f"{s.outside}/evil", "f", "x"))], ("absolute name",)),
    "symlink then write": (
        lambda s: [layer(E("escape", "l", str(s.outside)), E("escape/evil", "f", "x"))],
        ("through the symlink /escape",),
    ),
    "symlink then write across layers": (
        lambda s: [layer(E("escape", "l", "../../outside")), layer(E("escape/evil", "f", "x"))],
        ("through the symlink /escape",),
    ),
    "symlink dir then hard link through it": (
        lambda s: [layer(E("escape", "l", str(s.outside))), layer(E("evil", "h", "escape/secret"))],
        ("through the symlink /escape",),
    ),
    "hard link outside": (lambda s: [layer(E("evil", "h", "../outside/secret"))], ("contains '..'",)),
    "hard link absolute": (lambda s: [layer(E("evil", "h", f"{s.outside}/secret"))], ("absolute name",)),
    "whiteout through symlink": (
        lambda s: [layer(E("escape", "l", str(s.outside))), layer(E("escape/.wh.secret"))],
        ("through the symlink /escape",),
    ),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_escaping_layers_are_refused(kind: str, site: Site) -> None:
    make, words = HOSTILE[kind]
    site.push("hostile", make(site))
    run = site.publish("hostile")
    refused(run, *words)
    assert run.seconds < 60
    assert (site.outside / "secret").read_text() == SECRET and sorted(os.listdir(site.outside)) == ["secret"]
    nothing_published(site)


def test_device_nodes_and_fifos_are_not_created(site: Site) -> None:
    entries = [E("dev", "d", mode=0o755), E("dev/sda", "c"), E("run", "d"), E("run/pipe", "p")]
    site.push("devices", [layer(*entries, E("etc", "d"), E("etc/ok", "f", "fine"))])
    run = site.publish("devices")
    assert run.code == 0, run.stderr
    assert "/dev/sda (device node, not created)" in run.stderr
    assert "/run/pipe (FIFO, not created)" in run.stderr
    flats = list((site.tree / ".flat").rglob("etc/ok"))
    assert len(flats) == 1 and flats[0].read_text() == "fine"
    for path in (site.tree / ".flat").rglob("*"):
        mode = os.lstat(path).st_mode
        assert not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)), path


def _bomb(count: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo("many")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(info)
        for n in range(count):
            info = (
                tarfile.TarInfo(f"many/{n // 1000}/{n}") if n % 1000 else tarfile.TarInfo(f"many/{n // 1000}")
            )
            if n % 1000 == 0:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
    return out.getvalue()


def test_file_count_bomb_is_refused_past_the_limit(site: Site) -> None:
    site.push("bomb", [_bomb(100_000)])
    run = site.publish("bomb", max_entries="20000")
    refused(run, "more than 20000 entries", "cvmfs.max_entries")
    assert run.seconds < 60 and run.max_rss_mb < 500, (run.seconds, run.max_rss_mb)
    nothing_published(site)


@pytest.mark.slow
def test_file_count_bomb_fits_the_default_limit(site: Site) -> None:
    """A real Python environment can hold 100,000 files: the default accepts them."""
    site.push("bomb", [_bomb(100_000)])
    run = site.publish("bomb")
    assert run.code == 0, run.stderr
    assert run.seconds < 300 and run.max_rss_mb < 1000, (run.seconds, run.max_rss_mb)
    assert len(list((site.tree / ".flat").rglob("many/99/*"))) == 999


def _sparse_layer(tmp: Path, size: int) -> bytes:
    """A layer holding a sparse file of `size` bytes (GNU tar's sparse format: the holes are not stored)."""
    work = tmp / "sparse-src"
    work.mkdir()
    with open(work / "disk.img", "wb") as handle:
        handle.truncate(size)
        handle.seek(size // 2)
        handle.write(b"middle")
    subprocess.run(
        ["tar", "--sparse", "-C", str(work), "-cf", str(tmp / "sparse.tar"), "disk.img"], check=True
    )
    data = (tmp / "sparse.tar").read_bytes()
    shutil.rmtree(work)
    (tmp / "sparse.tar").unlink()
    return data


@pytest.mark.slow
def test_sparse_10_gb_file_stays_sparse(site: Site) -> None:
    site.push("sparse", [_sparse_layer(site.tmp, 10 * GIB)])
    run = site.publish("sparse")
    assert run.code == 0, run.stderr
    assert run.seconds < 300 and run.max_rss_mb < 500, (run.seconds, run.max_rss_mb)
    (published,) = list((site.tree / ".flat").rglob("disk.img"))
    st = os.stat(published)
    assert st.st_size == 10 * GIB
    assert st.st_blocks * 512 < 16 << 20, f"{st.st_blocks * 512} bytes on disk: the holes were written"
    with open(published, "rb") as handle:
        handle.seek(5 * GIB)
        assert handle.read(6) == b"middle"


def test_size_bomb_is_refused_past_the_limit(site: Site) -> None:
    site.push("sparse", [_sparse_layer(site.tmp, 10 * GIB)])
    run = site.publish("sparse", max_bytes=str(GIB))
    refused(run, f"past {GIB} bytes", "cvmfs.max_bytes")
    assert run.seconds < 30 and run.max_rss_mb < 500, (run.seconds, run.max_rss_mb)
    nothing_published(site)


@pytest.fixture
def own_site(
    tmp_path: Path, site: Site, require_part: Callable[[str], None]
) -> Iterator[tuple[Site, OwnRegistry]]:
    """The site, but on a registry of the test's own whose disk the test may corrupt."""
    if shutil.which("docker-registry") is None:
        require_part("docker-registry is missing: imagekit dev up installs Debian's docker-registry")
    registry = OwnRegistry(tmp_path / "own-registry")
    registry.start()
    client = RegistryClient.from_profile(
        Profile.model_validate({"registry": {"url": registry.url, "project": site.project}})
    )
    own = Site(site.tmp, site.tree, site.outside, registry.url, site.project, client)
    try:
        yield own, registry
    finally:
        client.close()
        registry.stop()
        shutil.rmtree(registry.root, ignore_errors=True)


def _blob_file(registry: OwnRegistry, digest: str) -> Path:
    hex_ = digest.split(":", 1)[1]
    return registry.root / "storage/docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def _first_layer(client: RegistryClient, repository: str) -> str:
    manifest = client.manifest(repository, "1.0.0")
    layers = json.loads(manifest.raw)["layers"]
    assert layers[0]["mediaType"] == OCI_LAYER
    return str(layers[0]["digest"])


def test_layer_whose_digest_does_not_match_is_refused(own_site: tuple[Site, OwnRegistry]) -> None:
    site, registry = own_site
    site.push("corrupt", [layer(E("etc", "d"), E("etc/ok", "f", "good content"))])
    digest = _first_layer(site.client, f"{site.project}/corrupt")
    blob = _blob_file(registry, digest)
    blob.write_bytes(gzip.compress(layer(E("etc", "d"), E("etc/ok", "f", "EVIL content")), mtime=0))
    registry.stop()
    registry.start()
    run = site.publish("corrupt")
    assert run.code == 1, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert f"blob {digest} arrived with digest sha256:" in last, run.stderr
    assert "internal error" not in run.stderr
    nothing_published(site)


def test_manifest_pointing_at_a_missing_blob_is_refused(own_site: tuple[Site, OwnRegistry]) -> None:
    site, registry = own_site
    site.push("missing", [layer(E("etc", "d"), E("etc/ok", "f", "good content"))])
    digest = _first_layer(site.client, f"{site.project}/missing")
    shutil.rmtree(_blob_file(registry, digest).parent)
    registry.stop()
    registry.start()
    run = site.publish("missing")
    last = run.stderr.strip().splitlines()[-1]
    assert run.code in (1, 2) and digest in last, run.stderr
    assert "internal error" not in run.stderr
    nothing_published(site)

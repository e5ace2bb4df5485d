"""The local backend end to end against the real registry: publish, no-op, a code-only version from
the published layers, failures that leave the tree exact, the lock, channels, GC, verify, the CLI."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from imagekit import cvmfs
from imagekit.config import Profile
from imagekit.cvmfs.backends import backend_for
from imagekit.errors import ToolError
from imagekit.registry import RegistryClient

from .images import E, layer, push_layers

pytestmark = [pytest.mark.registry]
COTS_BYTES = 3 * 1024 * 1024


def _cots(size: int = COTS_BYTES) -> bytes:
    block = hashlib.sha256(b"cots").digest() * 32
    return b"".join(hashlib.sha256(block + i.to_bytes(4, "big")).digest() * 32 for i in range(size // 1024))


BASE = layer(E("etc", "d", mode=0o755), E("etc/os-release", "f", "ID=test\n"), E("bin", "d", mode=0o755))
COTS = layer(
    E("opt", "d", mode=0o755), E("opt/cots", "d", mode=0o755), E("opt/cots/lib.so", "f", _cots(), 0o755)
)


def code(version: str) -> bytes:
    return layer(
        E("opt/processor", "d", mode=0o755),
        E("opt/processor/run", "f", f"#!/bin/sh\necho {version}\n", 0o755),
        E("opt/processor/VERSION", "f", version),
    )


def tree_hash(root: Path, *, skip: tuple[str, ...] = ()) -> str:
    """Content, type, mode, owner and link target of every entry below root."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if str(Path(dirpath, d).relative_to(root)) not in skip)
        for name in sorted([*dirnames, *filenames]):
            full = Path(dirpath) / name
            if str(full.relative_to(root)) in skip:
                continue
            st = os.lstat(full)
            digest.update(
                f"{full.relative_to(root)}:{st.st_mode}:{st.st_uid}:{st.st_gid}:{st.st_size}".encode()
            )
            if full.is_symlink():
                digest.update(os.readlink(full).encode())
            elif full.is_file():
                digest.update(full.read_bytes())
    return digest.hexdigest()


def _publish(profile: Profile, ref: str) -> cvmfs.PublishResult:
    return cvmfs.publish(profile, ref, skip_reason="test image")


def test_publish_noop_and_code_only_version(tree_profile: Profile, registry_client: RegistryClient) -> None:
    repository = f"{tree_profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, COTS, code("1.0")])
    push_layers(registry_client, repository, "1.1", [BASE, COTS, code("1.1")])
    root = tree_profile.cvmfs_root

    first = _publish(tree_profile, "proc:1.0")
    assert not first.noop and first.publication.layers_applied == 3
    assert first.publication.revision == 1
    meta = root / ".metadata" / tree_profile.registry.url / f"{repository}:1.0"
    assert (meta / "manifest.json").read_bytes() == registry_client.manifest(repository, "1.0").raw
    link = root / tree_profile.registry.url / f"{repository}:1.0"
    assert not os.readlink(link).startswith("/")
    assert (link / "opt/processor/VERSION").read_text() == "1.0"
    assert (link / ".singularity.d/runscript").is_file() and (link / ".cvmfscatalog").is_file()
    assert (root / ".cvmfsdirtab").is_file() and (link.resolve().parent / ".cvmfscatalog").is_file()

    again = _publish(tree_profile, "proc:1.0")
    assert again.noop and again.seconds < 1

    v1_flat = root / first.publication.flat
    before = tree_hash(v1_flat)
    second = _publish(tree_profile, "proc:1.1")
    assert second.publication.incremental_from is not None
    assert second.publication.layers_applied == 1
    assert second.publication.bytes_written < 20_000  # the code layer and .singularity.d, never the COTS
    assert second.publication.revision == 2
    assert tree_hash(v1_flat) == before
    v2_flat = root / second.publication.flat
    assert (v2_flat / "opt/cots/lib.so").stat().st_ino == (v1_flat / "opt/cots/lib.so").stat().st_ino
    assert (v2_flat / "opt/processor/VERSION").read_text() == "1.1"
    assert cvmfs.verify(tree_profile).problems == {}
    assert cvmfs.published(tree_profile, repository, "1.1") == second.publication
    assert second.publication.skip_scan_reason == "test image"


def test_failed_publish_leaves_the_tree_exact(tree_profile: Profile, registry_client: RegistryClient) -> None:
    repository = f"{tree_profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, COTS, code("1.0")])
    push_layers(
        registry_client, repository, "2.0", [BASE, COTS, code("2.0"), layer(E("opt/../../x", "f", "x"))]
    )
    _publish(tree_profile, "proc:1.0")
    root = tree_profile.cvmfs_root
    before = tree_hash(root)
    with pytest.raises(cvmfs.UnsafeLayer, match=r"'opt/\.\./\.\./x' contains '\.\.'"):
        _publish(tree_profile, "proc:2.0")
    assert tree_hash(root) == before
    assert cvmfs.published(tree_profile, repository, "2.0") is None


def test_a_held_lock_stops_a_concurrent_publish(
    tree_profile: Profile, registry_client: RegistryClient
) -> None:
    repository = f"{tree_profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, code("1.0")])
    profile = tree_profile.model_copy(deep=True)
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
        with pytest.raises(ToolError, match=r"is locked by pid \d+"):
            _publish(profile, "proc:1.0")
    finally:
        release.set()
        holder.join()
    assert _publish(profile, "proc:1.0").publication.revision == 1


def test_channels_gc_and_verify(tree_profile: Profile, registry_client: RegistryClient) -> None:
    repository = f"{tree_profile.registry.project}/proc"
    for version in ("1.0", "1.1", "1.2"):
        push_layers(registry_client, repository, version, [BASE, COTS, code(version)])
        _publish(tree_profile, f"proc:{version}")
        time.sleep(1.1)  # publication times are to the second
    assert cvmfs.move_channel(tree_profile, "proc", "production", "1.0") is None
    assert cvmfs.move_channel(tree_profile, "proc", "production", "1.1") == "1.0"
    assert cvmfs.move_channel(tree_profile, "proc", "production", "1.0") == "1.1"  # rollback: a flip
    channel = tree_profile.cvmfs_root / tree_profile.registry.url / f"{repository}:production"
    assert (channel / "opt/processor/VERSION").read_text() == "1.0"

    plan, verified = cvmfs.gc(tree_profile, 1, dry_run=False, log=lambda _: None)
    assert [Path(t).name for t in plan.tags] == ["proc:1.1"]  # 1.2 newest, 1.0 on a channel
    assert len(plan.flats) == 1 and plan.chains == []
    assert verified is not None and verified.problems == {}
    assert (channel / "opt/processor/VERSION").read_text() == "1.0"
    assert cvmfs.published(tree_profile, repository, "1.1") is None

    flat = tree_profile.cvmfs_root / cvmfs.published(tree_profile, repository, "1.2").flat  # type: ignore[union-attr]
    (flat / ".singularity.d/runscript").unlink()
    broken = cvmfs.verify(tree_profile, repository, "1.2")
    assert any("/.singularity.d/runscript: missing" in line for line in next(iter(broken.problems.values())))


def _cli(profile: Profile, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "IMAGEKIT_CVMFS_ROOT": str(profile.cvmfs_root),
        "IMAGEKIT_REGISTRY_PROJECT": profile.registry.project,
        "IMAGEKIT_PATHS_DATA_DIR": str(profile.data_dir),
    }
    imagekit = str(Path(sys.executable).parent / "imagekit")
    return subprocess.run(
        [imagekit, *args], capture_output=True, text=True, env=env, check=False, timeout=300
    )


def test_cli_refuses_unpushed_and_unscanned_images(
    tree_profile: Profile, registry_client: RegistryClient
) -> None:
    missing = _cli(tree_profile, "publish", "--cvmfs", "proc:9.9")
    assert missing.returncode == 2 and "was never pushed" in missing.stderr
    repository = f"{tree_profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, code("1.0")])
    unscanned = _cli(tree_profile, "publish", "--cvmfs", "proc:1.0")
    assert unscanned.returncode == 3 and "no scan of this exact content" in unscanned.stderr
    done = _cli(
        tree_profile, "publish", "--cvmfs", "proc:1.0", "--skip-scan", "--reason", "hand-made test layers"
    )
    assert done.returncode == 0, done.stderr
    assert "revision 1" in done.stdout
    assert cvmfs.published(tree_profile, repository, "1.0").skip_scan_reason == "hand-made test layers"  # type: ignore[union-attr]
    verified = _cli(tree_profile, "cvmfs", "verify", "proc:1.0")
    assert verified.returncode == 0 and "ok .flat/" in verified.stdout


@pytest.mark.slow
def test_sigkill_mid_publish_leaves_the_tree_intact(
    tree_profile: Profile, registry_client: RegistryClient
) -> None:
    repository = f"{tree_profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, code("1.0")])
    big = layer(E("opt", "d"), *(E(f"opt/blob-{i}", "f", _cots(4 * 1024 * 1024)) for i in range(25)))
    push_layers(registry_client, repository, "2.0", [BASE, big, code("2.0")])
    _publish(tree_profile, "proc:1.0")
    root = tree_profile.cvmfs_root
    before = tree_hash(root, skip=(".imagekit/staging", ".imagekit/lock"))
    reason = ("publish", "--cvmfs", "proc:2.0", "--skip-scan", "--reason", "test")
    killed = subprocess.Popen(
        [str(Path(sys.executable).parent / "imagekit"), *reason],
        env={
            **os.environ,
            "IMAGEKIT_CVMFS_ROOT": str(root),
            "IMAGEKIT_REGISTRY_PROJECT": tree_profile.registry.project,
            "IMAGEKIT_PATHS_DATA_DIR": str(tree_profile.data_dir),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while (
        not list((root / ".imagekit/staging").glob("*/tree-.flat_*/opt/blob-3"))
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert list((root / ".imagekit/staging").iterdir()), "the run was killed before it wrote anything"
    assert tree_hash(root, skip=(".imagekit/staging", ".imagekit/lock")) == before
    after = _cli(tree_profile, "publish", "--cvmfs", "proc:2.0", "--skip-scan", "--reason", "test")
    assert after.returncode == 0, after.stderr
    assert "removing what an interrupted run left" in after.stderr
    assert list((root / ".imagekit/staging").iterdir()) == []
    assert cvmfs.verify(tree_profile).problems == {}

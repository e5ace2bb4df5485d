"""A real part missing — the engine, the registry, the Trivy DB, `cvmfs_server`, disk space — is one
line saying what is missing and how to get it, exit 1, never a traceback; nothing is left half-done."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from images import E, layer, push_layers

from imagekit.config import Profile
from imagekit.registry import RegistryClient

EXAMPLE = Path(__file__).resolve().parents[2] / "processors" / "olci-l1-demo"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEKIT_")}
    env["IMAGEKIT_PATHS_DATA_DIR"] = str(tmp / "data")
    env.update(extra)
    return env


def _run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagekit.cli", *args], env=env, cwd=cwd, capture_output=True, text=True
    )


def one_clear_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    assert done.returncode == 1, done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in last, last
    return last


@pytest.fixture
def data(tmp_path: Path, site_profile: Profile) -> Path:
    (tmp_path / "data").mkdir()
    bases = site_profile.data_dir / "bases.json"
    if bases.is_file():
        (tmp_path / "data" / "bases.json").write_bytes(bases.read_bytes())
    return tmp_path / "data"


def test_no_engine(tmp_path: Path, data: Path) -> None:
    processor = shutil.copytree(EXAMPLE, tmp_path / "proc", ignore=shutil.ignore_patterns(".imagekit"))
    done = _run(
        _env(tmp_path, DOCKER_HOST="unix:///nonexistent/docker.sock"), tmp_path, "build", str(processor)
    )
    one_clear_line(done, "Docker daemon at unix:///nonexistent/docker.sock is missing", "imagekit dev up")


def test_no_registry(tmp_path: Path, data: Path) -> None:
    env = _env(tmp_path, IMAGEKIT_REGISTRY_URL="127.0.0.1:9", IMAGEKIT_CVMFS_ROOT=str(tmp_path / "tree"))
    done = _run(
        env, tmp_path, "publish", "--cvmfs", "imagekit/anything:1.0.0", "--skip-scan", "--reason", "t"
    )
    one_clear_line(done, "registry 127.0.0.1:9 unreachable")
    assert not (tmp_path / "tree").exists() or not any((tmp_path / "tree").rglob("*"))


@pytest.fixture
def tiny_image(site_profile: Profile, local_env: dict[str, object]) -> Iterator[str]:
    image = f"reliability-missing-{uuid.uuid4().hex[:8]}:1.0.0"
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as archive:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        archive.addfile(info, io.BytesIO(b"hello\n"))
    docker = site_profile.engine.docker
    subprocess.run([docker, "import", "-", image], input=rootfs.getvalue(), capture_output=True, check=True)
    yield image
    subprocess.run([docker, "image", "rm", "--force", image], capture_output=True, check=False)


@pytest.mark.engine
def test_no_trivy_db_when_required(tmp_path: Path, data: Path, tiny_image: str) -> None:
    env = _env(tmp_path, IMAGEKIT_SCAN_VULNERABILITY_DB="required", IMAGEKIT_SCAN_TRIVY_DB_REPOSITORY="")
    done = _run(env, tmp_path, "scan", tiny_image, "--reports", str(tmp_path / "scans"))
    one_clear_line(done, "scan.trivy_db_repository")


@pytest.fixture
def pushed(site_profile: Profile, local_env: dict[str, object], test_project: str) -> Iterator[str]:
    """`<project>/<name>:1.0.0` on the site registry: one layer with a 4 MB file that does not compress."""
    payload = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(4 << 15))
    with RegistryClient.from_profile(site_profile) as client:
        repository = f"{test_project}/filler"
        digest = push_layers(
            client, repository, "1.0.0", [layer(E("opt", "d"), E("opt/filler", "f", payload))]
        )
        yield f"{repository}:1.0.0"
        client.delete_manifest(repository, digest)


@pytest.mark.registry
def test_no_cvmfs_server_binary(tmp_path: Path, data: Path, pushed: str, test_project: str) -> None:
    env = _env(
        tmp_path,
        IMAGEKIT_REGISTRY_PROJECT=test_project,
        IMAGEKIT_CVMFS_BACKEND="cvmfs_server",
        IMAGEKIT_CVMFS_SERVER_BINARY="/nonexistent/cvmfs_server",
        IMAGEKIT_CVMFS_SPOOL_DIR=str(tmp_path / "spool"),
        IMAGEKIT_CVMFS_ROOT=str(tmp_path / "cvmfs"),
    )
    done = _run(env, tmp_path, "publish", "--cvmfs", pushed, "--skip-scan", "--reason", "t")
    one_clear_line(done, "cvmfs_server")


@pytest.fixture
def tiny_disk(tmp_path: Path, require_part: object) -> Iterator[Path]:
    target = tmp_path / "tree"
    target.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target)], capture_output=True
    )
    if mounted.returncode != 0:
        require_part(f"cannot mount a 2 MB tmpfs (needs root): {mounted.stderr.decode().strip()}")  # type: ignore[operator]
    yield target
    subprocess.run(["umount", str(target)], capture_output=True, check=False)


@pytest.mark.registry
def test_no_space_aborts_cleanly(
    tmp_path: Path, data: Path, pushed: str, test_project: str, tiny_disk: Path
) -> None:
    env = _env(tmp_path, IMAGEKIT_REGISTRY_PROJECT=test_project, IMAGEKIT_CVMFS_ROOT=str(tiny_disk))
    done = _run(env, tmp_path, "publish", "--cvmfs", pushed, "--skip-scan", "--reason", "t")
    one_clear_line(done, "space")
    leftovers = [p for p in tiny_disk.rglob("*") if p.is_file() and ".imagekit" not in p.parts]
    assert not leftovers, leftovers
    assert shutil.disk_usage(tiny_disk).used < 256 << 10, "the aborted publication left its files behind"

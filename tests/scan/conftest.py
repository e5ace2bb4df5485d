"""Real parts for the scan tests: engine, registry, a Debian 12 image and a small real Trivy DB in it.

Everything a session creates (images, registry, its storage, caches) is removed at its end. A missing
part skips locally with the reason, and fails under CI=true.

The suite runs with --import-mode=importlib, which leaves sys.path alone: this directory is added so
the tests can import their helper modules (scan_parts, trivydb_artifact).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from imagekit.scan.trivy import DEFAULT_TRIVY

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trivydb_artifact
from scan_parts import FIXED_CVE, UNFIXED_CVE, BaseImage, Db, require, run

ROOTFS_TAR = Path(os.environ.get("IMAGEKIT_TEST_ROOTFS", "/tmp/deb12.tar"))
"""A Debian 12 minbase rootfs tar, reused if present; else mmdebstrap makes one (about 30 s)."""
DEBIAN_MIRROR = "http://deb.debian.org/debian"


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="imagekit-scan-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def docker() -> str:
    binary = shutil.which("docker")
    require(binary is not None, "the docker client (docker.io)")
    assert binary is not None
    alive = subprocess.run([binary, "info"], capture_output=True, check=False).returncode == 0
    require(alive, "a running Docker engine")
    return binary


@pytest.fixture(scope="session")
def trivy() -> str:
    require(Path(DEFAULT_TRIVY).is_file(), f"trivy at {DEFAULT_TRIVY} (pip install 'imagekit[scan]')")
    return DEFAULT_TRIVY


def _answers(registry: str) -> bool:
    try:
        return httpx.get(f"http://{registry}/v2/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def registry(scratch: Path) -> Iterator[str]:
    """Our own docker-registry on a free loopback port; else an existing one on 127.0.0.1:5000."""
    binary = shutil.which("docker-registry")
    if binary is None:
        require(_answers("127.0.0.1:5000"), "docker-registry, or a registry on 127.0.0.1:5000")
        yield "127.0.0.1:5000"
        return
    address = f"127.0.0.1:{_free_port()}"
    config = scratch / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {scratch / 'registry'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n"
    )
    with (scratch / "registry.log").open("w") as log:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not _answers(address):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not start: {(scratch / 'registry.log').read_text()}")
            time.sleep(0.1)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def loader(scratch: Path) -> Path:
    """tests/trivydb/main.go, built once per session with Debian's Go and bbolt."""
    require(shutil.which("go") is not None, "Go (apt-get install golang-go)")
    require(
        Path("/usr/share/gocode/src/go.etcd.io/bbolt").is_dir(),
        "bbolt sources (apt-get install golang-github-coreos-bbolt-dev)",
    )
    out = scratch / "go"
    out.mkdir()
    return trivydb_artifact.build_loader(out)


@pytest.fixture(scope="session")
def base_image(docker: str, scratch: Path) -> Iterator[BaseImage]:
    """A real Debian 12 image, imported from a minbase rootfs (no Docker Hub here)."""
    rootfs = ROOTFS_TAR
    if not rootfs.is_file():
        require(shutil.which("mmdebstrap") is not None, f"{ROOTFS_TAR} or mmdebstrap to make one")
        rootfs = scratch / "rootfs.tar"
        run("mmdebstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR, timeout=600)
    ref = f"imagekit-scan-test-{uuid.uuid4().hex[:10]}:base"
    run(docker, "import", str(rootfs), ref, timeout=300)
    try:
        query = run(
            docker, "run", "--rm", "--network", "none", ref,
            "dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "tar", "apt",
        )  # fmt: skip
        versions = dict(line.split() for line in query.stdout.splitlines())
        yield BaseImage(ref, versions["tar"], versions["apt"])
    finally:
        subprocess.run([docker, "rmi", "-f", ref], capture_output=True, check=False)


def _publish(loader: Path, registry: str, repo: str, out: Path, image: BaseImage, age: timedelta) -> str:
    out.mkdir(parents=True)
    built = datetime.now(UTC) - age
    advisories = [
        {
            "platform": "debian 12",
            "package": "tar",
            "id": FIXED_CVE,
            "fixed_version": image.tar_version + "+imagekit1",
            "severity": "CRITICAL",
            "title": "planted: tar, fixed upstream",
        },
        {
            "platform": "debian 12",
            "package": "apt",
            "id": UNFIXED_CVE,
            "fixed_version": "",
            "severity": "HIGH",
            "title": "planted: apt, no fix yet",
        },
    ]
    db = trivydb_artifact.build_db(
        loader, out, advisories, updated_at=built, next_update=built + timedelta(hours=24)
    )
    trivydb_artifact.push_db(registry, repo, "2", db)
    return f"{registry}/{repo}:2"


@pytest.fixture(scope="session")
def db_namespace(registry: str) -> Iterator[str]:
    namespace = f"imagekit-test-{uuid.uuid4().hex[:10]}"
    yield namespace
    for repo in ("trivy-db", "trivy-db-stale"):
        trivydb_artifact.delete_repo_tags(registry, f"{namespace}/{repo}")


@pytest.fixture(scope="session")
def fresh_db(loader: Path, registry: str, db_namespace: str, base_image: BaseImage, scratch: Path) -> Db:
    """A current DB planting a fixed CRITICAL in tar and an unfixed HIGH in apt (and libapt-pkg)."""
    repository = _publish(
        loader, registry, f"{db_namespace}/trivy-db", scratch / "db-fresh", base_image, timedelta(hours=1)
    )
    return Db(repository, scratch / "trivy-cache")


@pytest.fixture(scope="session")
def stale_db(loader: Path, registry: str, db_namespace: str, base_image: BaseImage, scratch: Path) -> Db:
    repository = _publish(
        loader,
        registry,
        f"{db_namespace}/trivy-db-stale",
        scratch / "db-stale",
        base_image,
        timedelta(days=30),
    )
    return Db(repository, scratch / "trivy-cache-stale")

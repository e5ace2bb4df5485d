"""A known secret in the registry password variable and in CI variables appears nowhere: not in any
output or error message of render, push (right and wrong password) and publish, nor in a rendered file,
an image layer or artifact on the registry's disk, the CVMFS tree or imagekit's data directory."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from registry_parts import OwnRegistry

from imagekit.config import Profile

pytestmark = [pytest.mark.registry, pytest.mark.engine]
PASSWORD = "s3cr3t-Registry-Pw-" + uuid.uuid4().hex
CI_SECRET = "glpat-CiJobToken-" + uuid.uuid4().hex
SECRETS = (PASSWORD, CI_SECRET)
EXAMPLE = Path(__file__).resolve().parents[2] / "processors" / "olci-l1-demo"


def _contains_secret(data: bytes) -> str | None:
    for secret in SECRETS:
        if secret.encode() in data:
            return secret
    if data[:2] == b"\x1f\x8b":  # a gzip'd layer: look inside
        try:
            return _contains_secret(gzip.decompress(data))
        except (OSError, EOFError):
            return None
    return None


def _leaks(root: Path) -> list[str]:
    """Every file below root (gzip'd blobs unpacked) that holds a secret."""
    found = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            full = Path(dirpath, name)
            if full.is_symlink() or not full.is_file():
                continue
            if _contains_secret(full.read_bytes()):
                found.append(str(full))
    return found


@pytest.fixture
def world(
    tmp_path: Path, site_profile: Profile, local_env: dict[str, object], image_cleanup: object
) -> Iterator[tuple[OwnRegistry, dict[str, str], str]]:
    """A registry of the test's own that needs the password, the environment carrying both secrets,
    and a small local image to push."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("ci:" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode() + "\n")
    registry = OwnRegistry(tmp_path / "registry", htpasswd=htpasswd)
    registry.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEKIT_")}
    env.update(
        IMAGEKIT_REGISTRY_URL=registry.url,
        IMAGEKIT_REGISTRY_PROJECT="cred",
        IMAGEKIT_REGISTRY_USERNAME="ci",
        IMAGEKIT_REGISTRY_PASSWORD=PASSWORD,
        IMAGEKIT_CVMFS_BACKEND="local",
        IMAGEKIT_CVMFS_ROOT=str(tmp_path / "tree"),
        IMAGEKIT_PATHS_DATA_DIR=str(tmp_path / "data"),
        CI_JOB_TOKEN=CI_SECRET,
        CI_REGISTRY_PASSWORD=CI_SECRET,
        GITLAB_TOKEN=CI_SECRET,
    )
    (tmp_path / "data").mkdir()
    bases = site_profile.data_dir / "bases.json"
    if bases.is_file():
        (tmp_path / "data" / "bases.json").write_bytes(bases.read_bytes())
    image = f"reliability-cred-{uuid.uuid4().hex[:8]}:1.0.0"
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as archive:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        archive.addfile(info, io.BytesIO(b"hello\n"))
    docker = site_profile.engine.docker
    subprocess.run([docker, "import", "-", image], input=rootfs.getvalue(), capture_output=True, check=True)
    try:
        yield registry, env, image
    finally:
        subprocess.run([docker, "image", "rm", "--force", image], capture_output=True, check=False)
        registry.stop()


def _run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagekit.cli", *args], env=env, cwd=cwd, capture_output=True, text=True
    )


def test_secrets_appear_in_no_output_file_layer_or_tree(
    world: tuple[OwnRegistry, dict[str, str], str], tmp_path: Path
) -> None:
    registry, env, image = world
    reason = ["--skip-scan", "--reason", "reliability suite: credentials"]
    runs = {
        "render": _run(env, tmp_path, "render", str(EXAMPLE), "-o", str(tmp_path / "rendered")),
        "push": _run(env, tmp_path, "push", image, *reason),
        "publish": _run(env, tmp_path, "publish", "--cvmfs", f"cred/{image}", *reason),
        "config show": _run(env, tmp_path, "config", "show"),
        "push, wrong password": _run(
            {**env, "IMAGEKIT_REGISTRY_PASSWORD": PASSWORD + "-wrong"}, tmp_path, "push", image, *reason
        ),
        "push, --debug": _run(
            {**env, "IMAGEKIT_REGISTRY_PASSWORD": PASSWORD + "x"}, tmp_path, "--debug", "push", image, *reason
        ),
    }
    assert runs["render"].returncode == 0, runs["render"].stderr
    assert runs["push"].returncode == 0, runs["push"].stderr
    assert runs["publish"].returncode == 0, runs["publish"].stderr
    refused = runs["push, wrong password"]
    assert refused.returncode == 2, refused.stderr
    assert (
        "refused the credentials in IMAGEKIT_REGISTRY_USERNAME and IMAGEKIT_REGISTRY_PASSWORD"
        in refused.stderr
    )
    for what, done in runs.items():
        for secret in SECRETS:
            assert secret not in done.stdout and secret not in done.stderr, f"{what} printed a secret"
    assert (tmp_path / "tree").is_dir() and any((registry.root / "storage").rglob("data"))
    leaks = [
        *_leaks(tmp_path / "rendered"),
        *_leaks(tmp_path / "tree"),
        *_leaks(tmp_path / "data"),
        *_leaks(registry.root / "storage"),
        *(_leaks(tmp_path / "scans") if (tmp_path / "scans").exists() else []),
    ]
    assert not leaks, leaks
    # the grep itself finds a secret inside a gzip'd blob, as a layer would hold it
    assert _contains_secret(gzip.compress(PASSWORD.encode())) == PASSWORD

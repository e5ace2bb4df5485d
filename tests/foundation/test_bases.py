"""Bootstrapped bases: a real bootstrap into a registry of their own, from the site mirror, /dev empty."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

from imagekit.catalog import DIGEST_PATTERN
from imagekit.config import Profile, load_profile
from imagekit.devenv.bases import import_and_push
from imagekit.errors import ToolError
from imagekit.mirror import site_mirror


def layer_members(url: str, repository: str, manifest: dict[str, object]) -> list[tarfile.TarInfo]:
    """Every entry of every layer of an image, read from the registry's blobs."""
    members = []
    for layer in manifest["layers"]:  # type: ignore[attr-defined]
        blob = httpx.get(f"http://{url}/v2/{repository}/blobs/{layer['digest']}", follow_redirects=True)
        assert blob.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(blob.content), mode="r:*") as archive:
            members += archive.getmembers()
    return members


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.registry
def test_dev_up_bootstraps_bases_into_a_fresh_registry(tmp_path: Path, local_env: dict[str, object]) -> None:
    """A site with nothing recorded: bases are built from the Debian mirror, pushed, pinned."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"127.0.0.1:{probe.getsockname()[1]}"
    env = {**os.environ, "IMAGEKIT_PATHS_DATA_DIR": str(tmp_path / "data"), "IMAGEKIT_REGISTRY_URL": url}
    imagekit = [sys.executable, "-m", "imagekit.cli"]
    try:
        up = subprocess.run([*imagekit, "dev", "up"], env=env, capture_output=True, text=True, timeout=900)
        assert up.returncode == 0, up.stderr
        recorded = json.loads((tmp_path / "data" / "bases.json").read_text())
        assert set(recorded) == {"debian-12", "debian-12-python"}
        for name, ref in recorded.items():
            assert ref["image"] == f"{url}/imagekit/base/{name}"
            manifest = httpx.get(
                f"http://{url}/v2/imagekit/base/{name}/manifests/{ref['digest']}",
                headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            )
            assert manifest.status_code == 200
            members = layer_members(url, f"imagekit/base/{name}", manifest.json())
            devices = [m.name for m in members if m.ischr() or m.isblk() or m.isfifo()]
            assert devices == [], f"{name} carries device nodes: {devices}"
            names = {m.name.removeprefix("./").rstrip("/"): m for m in members}
            assert names["dev"].isdir(), f"{name} lost its empty /dev directory"
            assert not [n for n in names if n.startswith("dev/")], f"{name}: /dev is not empty"
        debian = f"{recorded['debian-12']['image']}@{recorded['debian-12']['digest']}"
        sources = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", debian, "cat", "/etc/apt/sources.list"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        mirror = site_mirror(load_profile(env=env).profile.site.apt_mirror, "bookworm")
        lines = [line for line in sources.splitlines() if line.strip()]
        assert lines == mirror.sources("bookworm"), "the base uses the site's mirror"
        assert "bookworm-security" in sources
    finally:
        subprocess.run([*imagekit, "dev", "down"], env=env, capture_output=True, timeout=120)
        for name in ("debian-12", "debian-12-python"):
            subprocess.run(
                ["docker", "image", "rm", "--force", f"{url}/imagekit/base/{name}:bookworm"],
                capture_output=True,
            )


def tiny_rootfs(path: Path) -> Path:
    """A root filesystem tarball of one file: enough for the engine to import and push."""
    data = b"imagekit test\n"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("etc/hello")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.engine
@pytest.mark.registry
def test_import_and_push_failures_are_clear_tool_errors(
    tmp_path: Path, site_profile: Profile, local_env: dict[str, object], test_project: str
) -> None:
    """The engine's own words, one line, exit 1; never python-on-whales' "internal error"."""
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar archive\n" * 64)
    tag = f"{site_profile.registry.url}/{test_project}/base/t:bookworm"
    with pytest.raises(ToolError, match=r"^importing base t into the engine failed: \S") as caught:
        import_and_push(site_profile, "t", garbage, tag)
    assert caught.value.exit_code == 1
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    nowhere = site_profile.model_copy(
        update={"registry": site_profile.registry.model_copy(update={"url": closed})}
    )
    unreachable = f"{closed}/{test_project}/base/t:bookworm"
    try:
        with pytest.raises(ToolError, match=rf"^pushing base t to {closed} failed: \S"):
            import_and_push(nowhere, "t", tiny_rootfs(tmp_path / "rootfs.tar"), unreachable)
    finally:
        subprocess.run(
            [site_profile.engine.docker, "image", "rm", "--force", unreachable], capture_output=True
        )


@pytest.mark.engine
@pytest.mark.registry
def test_import_and_push_returns_the_registry_digest(
    tmp_path: Path, site_profile: Profile, local_env: dict[str, object], test_project: str
) -> None:
    tag = f"{site_profile.registry.url}/{test_project}/base/t:bookworm"
    manifests = f"http://{site_profile.registry.url}/v2/{test_project}/base/t/manifests"
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    digest = ""
    try:
        digest = import_and_push(site_profile, "t", tiny_rootfs(tmp_path / "rootfs.tar"), tag)
        assert DIGEST_PATTERN.match(digest)
        assert httpx.head(f"{manifests}/{digest}", headers=accept).status_code == 200
    finally:
        subprocess.run([site_profile.engine.docker, "image", "rm", "--force", tag], capture_output=True)
        if digest:
            httpx.delete(f"{manifests}/{digest}", headers=accept)

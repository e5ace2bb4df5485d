"""Bootstrapped bases: patched sources, and a real bootstrap into a registry of their own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from imagekit.devenv.bases import apt_sources


def test_bases_come_with_updates_and_security_archives() -> None:
    assert apt_sources("http://deb.debian.org/debian", "bookworm") == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    assert apt_sources("http://mirror.example.org/deb/", "bookworm") == [
        "deb http://mirror.example.org/deb/ bookworm main",
        "deb http://mirror.example.org/deb/ bookworm-updates main",
    ]


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
        debian = f"{recorded['debian-12']['image']}@{recorded['debian-12']['digest']}"
        sources = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", debian, "cat", "/etc/apt/sources.list"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "bookworm-security" in sources
    finally:
        subprocess.run([*imagekit, "dev", "down"], env=env, capture_output=True, timeout=120)
        for name in ("debian-12", "debian-12-python"):
            subprocess.run(
                ["docker", "image", "rm", "--force", f"{url}/imagekit/base/{name}:bookworm"],
                capture_output=True,
            )

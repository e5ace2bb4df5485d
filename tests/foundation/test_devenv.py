"""`imagekit dev up/down` on the real machine: idempotent, and stopping only what it started."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from imagekit.devenv.services import engine_reachable, registry_reachable

IMAGEKIT = [sys.executable, "-m", "imagekit.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IMAGEKIT, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=900,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.engine
@pytest.mark.registry
def test_second_dev_up_changes_nothing(local_env: dict[str, object], site_profile) -> None:  # type: ignore[no-untyped-def]
    bases_file = site_profile.data_dir / "bases.json"
    state_file = site_profile.data_dir / "dev" / "state.json"
    before = (bases_file.read_text(), state_file.read_text() if state_file.exists() else "")
    result = run("dev", "up")
    assert result.returncode == 0, result.stderr
    assert "starting" not in result.stderr and "bootstrapping" not in result.stderr
    assert (bases_file.read_text(), state_file.read_text() if state_file.exists() else "") == before
    for name, ref in json.loads(bases_file.read_text()).items():
        assert f"{name}: {ref['image']}@{ref['digest']}" in result.stdout


@pytest.mark.engine
@pytest.mark.registry
def test_down_stops_only_what_up_started(tmp_path: Path, local_env: dict[str, object]) -> None:
    url = f"127.0.0.1:{free_port()}"
    env = {"IMAGEKIT_PATHS_DATA_DIR": str(tmp_path / "data"), "IMAGEKIT_REGISTRY_URL": url}
    try:
        up = run("dev", "up", "--no-bases", env=env)
        assert up.returncode == 0, up.stderr
        assert f"starting docker-registry on {url}" in up.stderr
        state = json.loads((tmp_path / "data" / "dev" / "state.json").read_text())
        assert set(state) == {"registry"}, "dockerd already ran, so up must not claim it"
        assert registry_reachable(url)
        down = run("dev", "down", env=env)
        assert down.returncode == 0, down.stderr
        assert "stopped: registry" in down.stdout
        assert not registry_reachable(url)
        assert engine_reachable(), "down must leave an engine it did not start running"
        assert run("dev", "down", env=env).stdout.strip().endswith("(imagekit started nothing running)")
    finally:
        pid = json.loads((tmp_path / "data" / "dev" / "state.json").read_text()).get("registry")
        if pid and registry_reachable(url):
            os.kill(pid, 15)

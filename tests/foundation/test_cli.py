"""The command line as a user meets it: exit codes, one clear line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

IMAGEKIT = [sys.executable, "-m", "imagekit.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*IMAGEKIT, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120, check=False
    )


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("doctor", "config", "dev", "base"):
        assert command in result.stdout


def test_unknown_option_is_usage_error() -> None:
    result = run("--no-such-flag")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_bad_profile_is_one_line_exit_2(tmp_path: Path) -> None:
    profile = tmp_path / "imagekit.toml"
    profile.write_text("[registry]\nulr = '127.0.0.1:5000'\n", encoding="utf-8")
    result = run("--profile", str(profile), "config", "show")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert str(profile) in last and "unknown key 'ulr'" in last and "did you mean 'url'" in last


def test_engine_that_does_not_exist_is_refused() -> None:
    result = run("--engine", "kaniko", "doctor")
    assert result.returncode == 2
    assert "engine.name" in result.stderr.strip().splitlines()[-1]


def test_config_show_names_each_source(tmp_path: Path) -> None:
    (tmp_path / "imagekit.toml").write_text('[cvmfs]\nrepository = "sw.esa.example"\n', encoding="utf-8")
    result = run(
        "config",
        "show",
        cwd=tmp_path,
        env={"IMAGEKIT_REGISTRY_PROJECT": "eo", "IMAGEKIT_REGISTRY_PASSWORD": "hunter2", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert "sw.esa.example" in result.stdout and "profile" in result.stdout
    assert "environment IMAGEKIT_REGISTRY_PROJECT" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.engine
def test_doctor_names_a_stopped_engine_and_how_to_start_it(tmp_path: Path) -> None:
    """An engine whose socket does not answer is what a stopped dockerd looks like to the client."""
    result = run("doctor", env={"DOCKER_HOST": f"unix://{tmp_path}/stopped.sock", "COLUMNS": "200"})
    assert result.returncode == 1
    assert "engine (docker)" in result.stdout and "MISSING" in result.stdout
    assert "dockerd --iptables=false --ip6tables=false --bridge=none" in result.stderr
    assert "engine (docker)" in result.stderr.strip().splitlines()[-1]


@pytest.mark.engine
@pytest.mark.registry
def test_doctor_passes_on_the_local_environment(local_env: dict[str, object]) -> None:
    result = run("doctor", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "server 20." in result.stdout or "server 2" in result.stdout


def test_doctor_names_an_unreachable_registry() -> None:
    result = run("--registry", "127.0.0.1:9", "doctor", env={"COLUMNS": "200"})
    assert result.returncode == 1
    assert "registry" in result.stderr.strip().splitlines()[-1]

"""build, test and scan --status as a user runs them: real engine, exit codes, last lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.slow]


def imagekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagekit.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=600,
        check=False,
    )


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_build_test_and_status_exit_codes(make_processor, docker_cleanup: list[str]) -> None:  # type: ignore[no-untyped-def]
    directory: Path = make_processor(runtime_packages=())
    tag = f"{directory.name}:1.0.0"
    docker_cleanup.append(tag)

    built = imagekit("build", str(directory), "--test")
    assert built.returncode == 0, built.stderr
    assert f"built {tag}" in built.stdout
    assert "PASS version: ok" in built.stdout and "PASS cots: ok" in built.stdout
    assert "Step " in built.stderr, "the engine's output streams to stderr"
    assert (directory / ".imagekit" / "build.log").read_text().count("Step ") >= 5

    status = imagekit("scan", "--status", str(directory))
    assert status.returncode == 3
    assert last_line(status) == f"{tag}: not scanned"

    manifest = directory / "processor.yaml"
    manifest.write_text(manifest.read_text().replace(f'"{directory.name} 1.0.0"', '"version 9"'))
    tested = imagekit("test", str(directory))
    assert tested.returncode == 1
    assert "FAIL version" in tested.stdout
    assert last_line(tested) == f"{tag}: 1 of 2 smoke tests failed: version"


def test_failing_build_and_untested_image_exit_codes(make_processor, docker_cleanup: list[str]) -> None:  # type: ignore[no-untyped-def]
    directory: Path = make_processor(runtime_packages=(), app_install="make -C /nowhere")
    failed = imagekit("build", str(directory), "--quiet")
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert "build failed on docker at: RUN make -C /nowhere" in last_line(failed)
    assert "  | /bin/bash: line 1: make: command not found" in failed.stderr, (
        "the step's last lines, without colour codes"
    )

    never_built = imagekit("test", str(directory))
    assert never_built.returncode == 2
    assert "is not built on docker" in last_line(never_built)

"""podman speaks Docker's command line: the same code path builds, reuses COTS layers and runs the
smoke tests, with the OCI runtime and ulimits imagekit chose for this host's cgroup layout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from imagekit.config import Profile
from imagekit.engines import Engine, engine_for
from imagekit.pipeline import build_processor

pytestmark = [pytest.mark.engine, pytest.mark.podman, pytest.mark.registry, pytest.mark.slow]


@pytest.fixture
def podman(site_profile: Profile, local_env: dict[str, object], require_part) -> tuple[Profile, Engine]:  # type: ignore[no-untyped-def]
    if shutil.which("podman") is None:
        require_part("podman is not installed: apt-get install -y podman")
    profile = site_profile.model_copy(
        update={"engine": site_profile.engine.model_copy(update={"name": "podman"})}
    )
    return profile, engine_for(profile)


def test_podman_builds_and_a_code_change_reuses_cots_layers(make_processor, podman, image_cleanup) -> None:  # type: ignore[no-untyped-def]
    profile, engine = podman
    directory = make_processor(runtime_packages=())
    tag = f"localhost/{directory.name}:1.0.0"
    image_cleanup("podman").append(tag)
    first = build_processor(directory, profile, on_line=lambda _line: None).image
    assert first.engine == "podman" and engine.exists(tag)
    script = directory / "bin" / "demo"
    script.write_text(script.read_text() + "# a scientist's one-line fix\n")
    second = build_processor(directory, profile, on_line=lambda _line: None).image
    changed = [i for i, (a, b) in enumerate(zip(first.diff_ids, second.diff_ids, strict=True)) if a != b]
    steps = [layer.created_by for layer in second.layers]
    assert changed and len(steps) == len(second.diff_ids), steps
    assert "/opt/processor/bin/" in steps[min(changed)], steps[min(changed)]
    added = [step for step in steps[: min(changed)] if "ADD " in step and step.rstrip().endswith(" in /")]
    assert len(added) == 2, f"both COTS layers (ADD <repacked tar> /) are reused: {steps}"


def imagekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagekit.cli", "--engine", "podman", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=900,
        check=False,
    )


def test_podman_runs_the_smoke_tests(make_processor, podman, image_cleanup) -> None:  # type: ignore[no-untyped-def]
    """`imagekit build --test` and `imagekit test` on podman: containers start, a failure is reported."""
    directory = make_processor(runtime_packages=())
    image_cleanup("podman").append(f"localhost/{directory.name}:1.0.0")
    built = imagekit("build", str(directory), "--test", "--quiet")
    assert built.returncode == 0, built.stdout + built.stderr
    assert "PASS version: ok" in built.stdout and "PASS cots: ok" in built.stdout

    manifest = directory / "processor.yaml"
    manifest.write_text(manifest.read_text().replace(f'"{directory.name} 1.0.0"', '"version 9"'))
    tested = imagekit("test", str(directory))
    assert tested.returncode == 1, tested.stdout + tested.stderr
    assert "PASS cots: ok" in tested.stdout and "FAIL version" in tested.stdout
    assert (
        tested.stderr.strip().splitlines()[-1]
        == f"{directory.name}:1.0.0: 1 of 2 smoke tests failed: version"
    )

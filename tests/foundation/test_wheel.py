"""The built wheel works on its own: templates and catalogs ship inside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.engine
def test_wheel_installs_and_runs_outside_the_source_tree(
    tmp_path: Path, local_env: dict[str, object]
) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("imagekit-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "COLUMNS": "200", "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}

    def imagekit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / "imagekit"), *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    assert imagekit("--help").returncode == 0
    listing = imagekit("base", "list")
    assert listing.returncode == 0, listing.stderr
    assert "debian-12-python" in listing.stdout and "rocky-9" in listing.stdout
    located = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import imagekit.resources as r; print(r.data_path('base_templates'))",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "site-packages/imagekit/_data/base_templates" in located.stdout
    doctor = imagekit("doctor")
    assert "engine (docker)" in doctor.stdout
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr

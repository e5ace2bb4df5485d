"""A COTS archive that is not the one the manifest pins: `validate` and `build` both fail, naming the
file, the expected and the actual sha256 — also when the archive is swapped behind validate's cache
(same size, same mtime), and before any engine runs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from manifest_cases import GOOD, PROCESSOR_FILES, SHA

from imagekit.config import Profile

ARCHIVE = "cots/vendor-tool-2.11.0.tar.gz"


@pytest.fixture
def processor(tmp_path: Path) -> Path:
    directory = tmp_path / "s3-olci-l1"
    for relative, content in PROCESSOR_FILES.items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(content, encoding="utf-8")
    (directory / "processor.yaml").write_text(GOOD, encoding="utf-8")
    return directory


def _cli(tmp: Path, site_profile: Profile, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEKIT_")}
    (tmp / "data").mkdir(exist_ok=True)
    bases = site_profile.data_dir / "bases.json"
    if bases.is_file() and not (tmp / "data" / "bases.json").exists():
        (tmp / "data" / "bases.json").write_bytes(bases.read_bytes())
    env["IMAGEKIT_PATHS_DATA_DIR"] = str(tmp / "data")
    return subprocess.run(
        [sys.executable, "-m", "imagekit.cli", *args], env=env, cwd=tmp, capture_output=True, text=True
    )


def _swap(archive: Path, content: bytes) -> str:
    """Replace the archive's bytes in place, keeping its size and mtime; returns the new sha256."""
    before = archive.stat()
    assert len(content) == before.st_size
    with archive.open("r+b") as handle:
        handle.write(content)
    os.utime(archive, ns=(before.st_atime_ns, before.st_mtime_ns))
    return hashlib.sha256(content).hexdigest()


def _names_all(stderr: str, actual: str) -> None:
    assert "vendor-tool-2.11.0.tar.gz" in stderr, stderr
    assert SHA in stderr and actual in stderr, stderr
    assert "internal error" not in stderr and "Traceback" not in stderr


def test_validate_names_file_expected_and_actual(
    processor: Path, tmp_path: Path, site_profile: Profile
) -> None:
    actual = _swap(processor / ARCHIVE, (processor / ARCHIVE).read_bytes().upper())
    done = _cli(tmp_path, site_profile, "validate", str(processor))
    assert done.returncode == 2, done.stderr
    _names_all(done.stderr, actual)
    assert "processor.yaml:" in done.stderr


def test_build_names_file_expected_and_actual_past_validates_cache(
    processor: Path, tmp_path: Path, site_profile: Profile, local_env: dict[str, object]
) -> None:
    assert _cli(tmp_path, site_profile, "validate", str(processor)).returncode == 0  # the cache knows it now
    actual = _swap(processor / ARCHIVE, (processor / ARCHIVE).read_bytes().upper())
    done = _cli(tmp_path, site_profile, "build", str(processor))
    assert done.returncode == 2, done.stderr
    _names_all(done.stderr.strip().splitlines()[-1], actual)
    assert "imagekit.build" not in done.stdout  # no engine build started

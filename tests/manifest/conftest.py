"""Fixtures: a processor directory holding the known-good manifest, and ways to load variants of it.

The suite runs with --import-mode=importlib, which leaves sys.path alone: this directory is added so
the tests can import their helper module (manifest_cases).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.errors import ManifestError, Problem
from imagekit.manifest import load_manifest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from manifest_cases import GOOD, PROCESSOR_FILES


@pytest.fixture
def proc_dir(tmp_path: Path) -> Path:
    """A processor directory holding every file GOOD refers to, and GOOD itself."""
    directory = tmp_path / "s3-olci-l1"
    for relative, content in PROCESSOR_FILES.items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(content, encoding="utf-8")
    (directory / "processor.yaml").write_text(GOOD, encoding="utf-8")
    return directory


@pytest.fixture
def write(proc_dir: Path) -> Callable[[str], Path]:
    """Write a processor.yaml into the processor directory; returns the directory."""

    def write(text: str) -> Path:
        (proc_dir / "processor.yaml").write_text(text, encoding="utf-8")
        return proc_dir

    return write


@pytest.fixture
def problems(write: Callable[[str], Path]) -> Callable[..., list[Problem]]:
    """The problems load_manifest reports for a manifest text (which must be invalid)."""

    def problems(text: str, *, release: bool = False, bases: str | None = None) -> list[Problem]:
        with pytest.raises(ManifestError) as caught:
            load_manifest(write(text), release=release, bases=bases)
        return caught.value.problems

    return problems

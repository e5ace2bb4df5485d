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
from imagekit.engines.base import named_by, step_images
from imagekit.errors import ImagekitError

IN_CI = os.environ.get("CI", "").lower() == "true"
ENGINES = ("docker", "podman", "buildah")
_real_runs: dict[str, int] = {name: 0 for name in (*ENGINES, "registry", "cvmfs_server")}


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


# engine binaries whose stage images the session's builds may have left dangling
_engines_used: set[str] = set()


@pytest.fixture
def image_cleanup(request: pytest.FixtureRequest) -> Iterator[Callable[[str], list[str]]]:
    """`image_cleanup(binary)` gives a list: its tags are removed after the test; the stage images that
    this session's builds left dangling on that engine (docker or podman) are removed when it ends."""
    tracked: dict[str, list[str]] = {}

    def track(binary: str) -> list[str]:
        _engines_used.add(binary)
        return tracked.setdefault(binary, [])

    yield track
    _own_images.update(_step_images(request.config))
    for binary, tags in tracked.items():
        if tags:
            subprocess.run([binary, "image", "rm", "--force", *tags], capture_output=True, check=False)


# short ids of the step images this session's builds made, gathered after each test (a later build of
# the same processor rewrites its build.log)
_own_images: set[str] = set()


def _step_images(config: pytest.Config) -> set[str]:
    """The step images named in the build logs under the session's temporary directory, where every
    build of a test runs."""
    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    found: set[str] = set()
    for log in base.rglob("*.log"):
        try:
            found |= step_images(log.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    return found


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove the dangling stage images of this session's own builds, and no other: an engine shared
    with another run (a developer's build, a bench) has that run's intermediate images dangling for a
    moment, and removing them mid-build breaks it ("unknown parent image ID")."""
    if not _engines_used:
        return
    own = _own_images | _step_images(session.config)
    for binary in _engines_used:
        leftovers = named_by(_dangling(binary), own)
        if leftovers:
            subprocess.run([binary, "image", "rm", "--force", *leftovers], capture_output=True, check=False)


@pytest.fixture
def docker_cleanup(
    site_profile: Profile, local_env: dict[str, object], image_cleanup: Callable[[str], list[str]]
) -> list[str]:
    """Tags a test appends are removed afterwards, with the stage images its builds left dangling."""
    return image_cleanup(site_profile.engine.docker)


_markers: dict[str, set[str]] = {}


def pytest_itemcollected(item: pytest.Item) -> None:
    _markers[item.nodeid] = {marker.name for marker in item.iter_markers()}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count passed tests per real part: `engine` alone means Docker; `podman`/`buildah` name theirs."""
    if report.when != "call" or not report.passed:
        return
    markers = _markers.get(report.nodeid, set())
    others = [name for name in ("podman", "buildah") if name in markers]
    for name in others:
        _real_runs[name] += 1
    if "engine" in markers and not others:
        _real_runs["docker"] += 1
    if "registry" in markers:
        _real_runs["registry"] += 1
    if "cvmfs_server" in markers:
        _real_runs["cvmfs_server"] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    engines = ", ".join(f"{_real_runs[name]} on {name}" for name in ENGINES)
    terminalreporter.write_line(
        f"real parts: tests passed against the real engines: {engines}; "
        f"{_real_runs['registry']} against the real registry; "
        f"{_real_runs['cvmfs_server']} against a real cvmfs_server"
    )

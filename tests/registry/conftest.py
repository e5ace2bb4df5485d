"""Real registries for the registry tests: the site's on 127.0.0.1:5000, and ones a test starts itself
(htpasswd auth, or one it stops mid-push). Images are small, built fresh from the bootstrapped base."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imagekit.config import Profile
from imagekit.registry import RegistryClient
from imagekit.scan.status import PASSED, ScanRecord, image_id, record

sys.path.insert(0, str(Path(__file__).resolve().parent))

from registry_parts import OwnRegistry

DOCKERFILE = """\
FROM {base}
COPY payload /opt/payload
LABEL org.opencontainers.image.title={name} org.opencontainers.image.version={version} \\
      org.opencontainers.image.revision={revision}
CMD ["cat", "/opt/payload/version"]
"""


@pytest.fixture
def profile(
    site_profile: Profile, local_env: dict[str, object], test_project: str, tmp_path: Path
) -> Profile:
    """The site's profile with this test's own registry project and data directory (scan records)."""
    copy = site_profile.model_copy(deep=True)
    copy.registry.project = test_project
    copy.paths.data_dir = str(tmp_path / "data")
    return copy


@pytest.fixture
def cli_env(profile: Profile) -> dict[str, str]:
    """Environment that makes the `imagekit` command use `profile`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEKIT_")}
    env.update(
        IMAGEKIT_REGISTRY_URL=profile.registry.url,
        IMAGEKIT_REGISTRY_PROJECT=profile.registry.project,
        IMAGEKIT_PATHS_DATA_DIR=profile.paths.data_dir,
        NO_COLOR="1",
        COLUMNS="200",
    )
    return env


@pytest.fixture
def build_image(
    profile: Profile, local_env: dict[str, object], docker_cleanup: list[str], tmp_path: Path
) -> Callable[..., str]:
    """`build_image(name, version, payload_bytes=..)`: a small runnable image `<name>:<version>`."""
    base = local_env["debian-12"].pinned  # type: ignore[attr-defined]
    docker = profile.engine.docker

    def build(name: str, version: str, *, payload: bytes = b"", revision: str = "") -> str:
        context = tmp_path / f"ctx-{name}-{version}-{uuid.uuid4().hex[:6]}"
        (context / "payload").mkdir(parents=True)
        (context / "payload" / "version").write_text(f"{name} {version}\n")
        (context / "payload" / "data.bin").write_bytes(payload or uuid.uuid4().bytes)
        revision = revision or uuid.uuid4().hex + uuid.uuid4().hex[:8]
        (context / "Dockerfile").write_text(
            DOCKERFILE.format(base=base, name=name, version=version, revision=revision)
        )
        tag = f"{name}:{version}"
        docker_cleanup.append(tag)
        subprocess.run(
            [docker, "build", "-q", "--network", "host", "-t", tag, str(context)],
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
            check=True,
            capture_output=True,
        )
        return tag

    return build


@pytest.fixture
def mark_scanned(profile: Profile) -> Callable[..., None]:
    """Record a scan result for a local image the way `imagekit scan` does (the gate push reads)."""

    def mark(image: str, status: str = PASSED) -> None:
        digest = image_id(image, docker=profile.engine.docker)
        assert digest
        name, _, version = image.partition(":")
        checked = status == PASSED or status == "failed"
        record(
            profile.data_dir,
            ScanRecord(
                digest=digest,
                image=image,
                name=name,
                version=version,
                status=status,  # type: ignore[arg-type]
                rule="test: recorded by the registry tests",
                scanned_at=datetime.now(UTC),
                reports=str(profile.data_dir / "no-reports"),
                db_repository="127.0.0.1:5000/mirror/trivy-db:2" if checked else None,
                db_updated_at=datetime.now(UTC) if checked else None,
            ),
        )

    return mark


@pytest.fixture
def registry_cleanup(profile: Profile) -> Iterator[None]:
    """Delete every manifest the test left in its project's repositories (the site registry's own
    garbage collection reclaims the blobs)."""
    yield
    with RegistryClient.from_profile(profile) as client:
        catalog = client.request("GET", "/v2/_catalog?n=10000").json().get("repositories") or []
        for repo in catalog:
            if not repo.startswith(profile.registry.project + "/"):
                continue
            for digest in {client.manifest_digest(repo, tag) for tag in client.tags(repo)} - {None}:
                client.delete_manifest(repo, str(digest))


@pytest.fixture
def own_registry(tmp_path: Path, require_part: Callable[[str], None]) -> Iterator[Callable[..., OwnRegistry]]:
    if shutil.which("docker-registry") is None:
        require_part("docker-registry is missing: imagekit dev up installs Debian's docker-registry")
    started: list[OwnRegistry] = []

    def make(*, htpasswd: Path | None = None) -> OwnRegistry:
        registry = OwnRegistry(Path(tmp_path / f"registry-{len(started)}"), htpasswd=htpasswd)
        registry.start()
        started.append(registry)
        return registry

    yield make
    for registry in started:
        registry.stop()

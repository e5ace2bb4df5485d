"""Fixtures of the release tests: a local CVMFS tree and a registry project of the test's own, on the
site registry or on a docker-registry the test starts (and may stop) itself."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagekit.config import Profile
from imagekit.registry import RegistryClient

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "registry"))

from registry_parts import OwnRegistry  # noqa: E402


@pytest.fixture
def profile(
    site_profile: Profile, local_env: dict[str, object], tmp_path: Path, test_project: str
) -> Profile:
    """The site profile with its own local CVMFS tree, registry project and data directory."""
    copy = site_profile.model_copy(deep=True)
    copy.cvmfs.backend = "local"
    copy.cvmfs.root = str(tmp_path / "tree")
    copy.registry.project = test_project
    copy.paths.data_dir = str(tmp_path / "data")
    return copy


@pytest.fixture
def registry_cleanup(profile: Profile) -> Iterator[None]:
    """Delete every manifest the test left in its project on the site registry."""
    yield
    with RegistryClient.from_profile(profile) as client:
        catalog = client.request("GET", "/v2/_catalog?n=10000").json().get("repositories") or []
        for repo in catalog:
            if repo.startswith(profile.registry.project + "/"):
                for digest in {client.manifest_digest(repo, tag) for tag in client.tags(repo)} - {None}:
                    client.delete_manifest(repo, str(digest))


@pytest.fixture
def own_registry(tmp_path: Path, require_part: Callable[[str], None]) -> Iterator[OwnRegistry]:
    """A docker-registry of the test's own, which the test may stop (removed with tmp_path)."""
    if shutil.which("docker-registry") is None:
        require_part("docker-registry is missing: imagekit dev up installs Debian's docker-registry")
    registry = OwnRegistry(tmp_path / "own-registry")
    registry.start()
    yield registry
    registry.stop()

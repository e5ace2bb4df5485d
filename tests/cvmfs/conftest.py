"""Fixtures of the CVMFS tests: a tree of their own, a registry project of their own, the registry client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imagekit.config import Profile
from imagekit.registry import RegistryClient


@pytest.fixture
def tree_profile(site_profile: Profile, tmp_path: Path, test_project: str) -> Profile:
    """The site profile with a local CVMFS tree under tmp_path and the test's own registry project."""
    profile = site_profile.model_copy(deep=True)
    profile.cvmfs.backend = "local"
    profile.cvmfs.root = str(tmp_path / "tree")
    profile.registry.project = test_project
    profile.paths.data_dir = str(tmp_path / "data")
    return profile


@pytest.fixture
def registry_client(site_profile: Profile, local_env: dict[str, object]) -> Iterator[RegistryClient]:
    with RegistryClient.from_profile(site_profile) as client:
        yield client

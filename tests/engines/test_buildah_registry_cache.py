"""buildah's registry cache (`engine.registry_cache`) against a registry that asks for credentials, as
Harbor does: the cache push and pull get the profile's credentials through a temporary 0600 auth
file that is gone afterwards, and the secret is in no output."""

from __future__ import annotations

import shutil
import stat
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest

from imagekit.config import Profile
from imagekit.engines import engine_for
from imagekit.engines.buildah import BuildahEngine
from imagekit.errors import BuildError
from imagekit.registry import RegistryClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))

from registry_parts import OwnRegistry

pytestmark = [pytest.mark.engine, pytest.mark.buildah, pytest.mark.registry]
SECRET = "cache-Pw-" + uuid.uuid4().hex


@pytest.fixture
def auth_registry(tmp_path: Path, require_part: Callable[[str], None]) -> Iterator[OwnRegistry]:
    """A docker-registry of the test's own on another loopback port, with htpasswd auth."""
    for part, how in (("buildah", "apt-get install -y buildah"), ("docker-registry", "imagekit dev up")):
        if shutil.which(part) is None:
            require_part(f"{part} is missing: {how}")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_bytes(b"ci:" + bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(rounds=4)) + b"\n")
    registry = OwnRegistry(tmp_path / "registry", htpasswd=htpasswd)
    registry.start()
    yield registry
    registry.stop()


def _context(directory: Path, payload: str) -> Path:
    """FROM scratch and two COPY layers: nothing to pull, each step a layer the cache holds."""
    directory.mkdir(parents=True)
    (directory / "a").write_text("the COTS layer\n")
    (directory / "b").write_text(payload)
    (directory / "Dockerfile").write_text("FROM scratch\nCOPY a /opt/a\nCOPY b /opt/b\n")
    return directory


def test_the_cache_push_and_pull_carry_the_profiles_credentials(
    site_profile: Profile,
    auth_registry: OwnRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    profile = site_profile.model_copy(deep=True)
    profile.engine.name = "buildah"
    profile.engine.registry_cache = True
    profile.registry.url = auth_registry.url
    profile.registry.insecure = True
    profile.registry.project = "cache"
    profile.registry.username_env = "CACHE_ROBOT_NAME"
    profile.registry.password_env = "CACHE_ROBOT_SECRET"
    monkeypatch.setenv("CACHE_ROBOT_NAME", "ci")
    monkeypatch.setenv("CACHE_ROBOT_SECRET", SECRET)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the engine writes its auth file
    name = f"cached-{uuid.uuid4().hex[:8]}"
    context = _context(tmp_path / "context", f"{name}\n")

    seen: dict[str, int] = {}

    def watch(_line: str) -> None:
        """While buildah runs: the auth file exists, only its owner may read it."""
        for path in scratch.iterdir():
            seen[path.name] = stat.S_IMODE(path.stat().st_mode)

    engines = []
    try:
        for storage in ("first", "second"):
            engine = engine_for(profile, storage_root=tmp_path / f"storage-{storage}")
            assert isinstance(engine, BuildahEngine)
            engines.append(engine)
            log = tmp_path / f"build-{storage}.log"
            engine.build(context, [f"{name}:1.0.0"], log_file=log, on_line=watch, source_date_epoch=0)
            text = log.read_text()
            assert SECRET not in text
            assert list(scratch.iterdir()) == [], "the auth file is deleted after the build"
        assert seen and set(seen.values()) == {0o600}, seen
        assert "Using cache" in text, "the second storage, empty, took its layers from the registry cache"
    finally:
        for engine in engines:
            engine.discard_storage()

    with RegistryClient.from_profile(profile) as client:
        assert client.tags(f"cache/{name}/cache"), "the cache layers were pushed with the credentials"


def test_without_credentials_the_failure_names_the_variables(
    site_profile: Profile, auth_registry: OwnRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = site_profile.model_copy(deep=True)
    profile.engine.name = "buildah"
    profile.engine.registry_cache = True
    profile.registry.url = auth_registry.url
    profile.registry.project = "cache"
    monkeypatch.delenv(profile.registry.username_env, raising=False)
    monkeypatch.delenv(profile.registry.password_env, raising=False)
    engine = engine_for(profile, storage_root=tmp_path / "storage")
    context = _context(tmp_path / "context", "no credentials\n")
    try:
        with pytest.raises(BuildError) as failed:
            engine.build(
                context,
                ["uncached:1.0.0"],
                log_file=tmp_path / "log",
                on_line=lambda _l: None,
                source_date_epoch=0,
            )
    finally:
        assert isinstance(engine, BuildahEngine)
        engine.discard_storage()
    assert failed.value.message.endswith(
        f"the registry {auth_registry.url} asks for credentials: set "
        "IMAGEKIT_REGISTRY_USERNAME and IMAGEKIT_REGISTRY_PASSWORD"
    )

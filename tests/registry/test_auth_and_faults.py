"""Registries a test starts itself: htpasswd auth (missing and wrong credentials), and one stopped in
the middle of a push and restarted."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from registry_parts import OwnRegistry, push_cut_by_outage, run_cli, skopeo_digest

from imagekit.config import Profile
from imagekit.registry import RegistryClient, repository

pytestmark = [pytest.mark.registry, pytest.mark.engine]
SECRET = "s3cret-never-shown-4711"


def test_credentials_missing_wrong_and_right(
    tmp_path: Path,
    own_registry: Callable[..., OwnRegistry],
    profile: Profile,
    build_image: Callable[..., str],
    mark_scanned: Callable[..., None],
    cli_env: dict[str, str],
) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_bytes(b"ci:" + bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(rounds=5)) + b"\n")
    registry = own_registry(htpasswd=htpasswd)
    image = build_image("reg-auth", "1.0.0")
    mark_scanned(image)
    env = {**cli_env, "IMAGEKIT_REGISTRY_URL": registry.url}

    missing = run_cli(env, "push", image)
    assert missing.returncode == 2
    assert "IMAGEKIT_REGISTRY_USERNAME and IMAGEKIT_REGISTRY_PASSWORD" in missing.stderr.splitlines()[-1]

    wrong = run_cli(
        {**env, "IMAGEKIT_REGISTRY_USERNAME": "ci", "IMAGEKIT_REGISTRY_PASSWORD": "nope"}, "push", image
    )
    assert wrong.returncode == 2 and "refused the credentials in IMAGEKIT_REGISTRY_USERNAME" in wrong.stderr
    assert "nope" not in wrong.stdout + wrong.stderr

    right_env = {**env, "IMAGEKIT_REGISTRY_USERNAME": "ci", "IMAGEKIT_REGISTRY_PASSWORD": SECRET}
    done = run_cli(right_env, "--debug", "push", image)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    listed = run_cli(right_env, "--debug", "releases", "reg-auth", "--json")
    assert listed.returncode == 0 and SECRET not in listed.stdout + listed.stderr


def test_registry_stopped_mid_push_fails_clearly_then_the_next_push_completes(
    own_registry: Callable[..., OwnRegistry],
    profile: Profile,
    build_image: Callable[..., str],
    mark_scanned: Callable[..., None],
    cli_env: dict[str, str],
) -> None:
    registry = own_registry()
    image = build_image("reg-fault", "1.0.0", payload=os.urandom(64 * 1024 * 1024))
    mark_scanned(image)
    env = {**cli_env, "IMAGEKIT_REGISTRY_URL": registry.url}
    code, stderr = push_cut_by_outage(env, image, registry)
    assert code == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert f"registry {registry.url} unreachable" in last and "tries" in last

    registry.start()
    at_registry = profile.model_copy(deep=True)
    at_registry.registry.url = registry.url
    repo = repository(at_registry, "reg-fault")
    with RegistryClient.from_profile(at_registry) as client:
        assert client.manifest_digest(repo, "1.0.0") is None
        assert all(client.manifest_digest(repo, c) is None for c in at_registry.release.channels)
    done = run_cli(env, "push", image)
    assert done.returncode == 0, done.stderr
    with RegistryClient.from_profile(at_registry) as client:
        digest = client.manifest_digest(repo, "1.0.0")
    assert digest and skopeo_digest(f"{registry.url}/{repo}:1.0.0") == digest


def test_plain_http_registry_builds_no_ssl_context(profile: Profile, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the CA bundle cost every command on the loopback registry ~0.07 s; it is left unloaded."""
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")  # any SSL context built now fails
    with pytest.raises(FileNotFoundError):
        RegistryClient(profile.registry.url, insecure=False)
    with RegistryClient(profile.registry.url, insecure=True) as client:
        client.ping()
        assert client.tags(f"{profile.registry.project}/no-such-repository") == []

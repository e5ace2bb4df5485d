"""The registry stopped in the middle of a push and restarted: the push fails with one clear line, no
tag and no channel moved (a channel set before stays where it was), and the next push completes.
Reuses the registry tests' fixtures (a registry of the test's own, images built from the base)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from registry_parts import OwnRegistry, push_cut_by_outage, run_cli, skopeo_digest
from reliability_parts import Case

from imagekit.config import Profile
from imagekit.registry import RegistryClient, repository

_spec = importlib.util.spec_from_file_location(
    "registry_fixtures", Path(__file__).resolve().parents[1] / "registry" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
profile, cli_env, build_image, mark_scanned, own_registry = (
    _fixtures.profile,
    _fixtures.cli_env,
    _fixtures.build_image,
    _fixtures.mark_scanned,
    _fixtures.own_registry,
)

pytestmark = [pytest.mark.registry, pytest.mark.engine]


def _tags(profile: Profile, url: str, name: str) -> dict[str, str | None]:
    at = profile.model_copy(deep=True)
    at.registry.url = url
    repo = repository(at, name)
    with RegistryClient.from_profile(at) as client:
        return {tag: client.manifest_digest(repo, tag) for tag in ("1.0", "1.1", *at.release.channels)}


def test_registry_stopped_mid_push_moves_nothing_and_the_next_push_completes(
    own_registry: Callable[..., OwnRegistry],
    profile: Profile,
    build_image: Callable[..., str],
    mark_scanned: Callable[..., None],
    cli_env: dict[str, str],
    case: Case,
) -> None:
    registry = own_registry()
    env = {**cli_env, "IMAGEKIT_REGISTRY_URL": registry.url}
    first = build_image("reg-outage", "1.0")
    mark_scanned(first)
    assert run_cli(env, "push", first).returncode == 0
    promoted = run_cli(env, "promote", "reg-outage", "1.0", "--channel", profile.release.channels[0])
    assert promoted.returncode == 0, promoted.stderr
    before = _tags(profile, registry.url, "reg-outage")

    second = build_image("reg-outage", "1.1", payload=os.urandom(64 * 1024 * 1024))
    mark_scanned(second)
    code, stderr = push_cut_by_outage(env, second, registry)
    assert code == 1, stderr
    assert f"registry {registry.url} unreachable" in stderr.strip().splitlines()[-1]

    registry.start()
    after = _tags(profile, registry.url, "reg-outage")
    if after != before:
        case.lost(f"a push cut by a registry outage changed tags: {before} -> {after}")
    done = run_cli(env, "push", second)
    assert done.returncode == 0, done.stderr
    final = _tags(profile, registry.url, "reg-outage")
    assert (
        final["1.1"]
        and skopeo_digest(f"{registry.url}/{repository(profile, 'reg-outage')}:1.1") == final["1.1"]
    )
    if {k: v for k, v in final.items() if k != "1.1"} != {k: v for k, v in before.items() if k != "1.1"}:
        case.lost(f"the completing push moved a channel: {before} -> {final}")

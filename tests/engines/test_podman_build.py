"""podman speaks Docker's command line: the same code path builds, and reuses COTS layers."""

from __future__ import annotations

import shutil

import pytest

from imagekit.config import Profile
from imagekit.engines import Engine, engine_for
from imagekit.pipeline import build_processor

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.slow]


@pytest.fixture
def podman(site_profile: Profile, local_env: dict[str, object], require_part) -> tuple[Profile, Engine]:  # type: ignore[no-untyped-def]
    if shutil.which("podman") is None:
        require_part("podman is not installed: apt-get install -y podman")
    profile = site_profile.model_copy(
        update={"engine": site_profile.engine.model_copy(update={"name": "podman"})}
    )
    return profile, engine_for(profile)


def test_podman_builds_and_a_code_change_reuses_cots_layers(make_processor, podman, image_cleanup) -> None:  # type: ignore[no-untyped-def]
    profile, engine = podman
    directory = make_processor(runtime_packages=())
    tag = f"localhost/{directory.name}:1.0.0"
    image_cleanup("podman").append(tag)
    first = build_processor(directory, profile, on_line=lambda _line: None).image
    assert first.engine == "podman" and engine.exists(tag)
    script = directory / "bin" / "demo"
    script.write_text(script.read_text() + "# a scientist's one-line fix\n")
    second = build_processor(directory, profile, on_line=lambda _line: None).image
    changed = [i for i, (a, b) in enumerate(zip(first.diff_ids, second.diff_ids, strict=True)) if a != b]
    steps = [layer.created_by for layer in second.layers]
    assert changed and len(steps) == len(second.diff_ids), steps
    assert "/opt/processor/bin/" in steps[min(changed)], steps[min(changed)]
    assert any("/opt/cots/tool-a" in step for step in steps[: min(changed)])
    assert any("/opt/cots/tool-b" in step for step in steps[: min(changed)])

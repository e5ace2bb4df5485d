"""Engine failures read as what they are: a ToolError naming the command and the engine's words,
or a MissingPartError naming the configured binary; never python-on-whales' exception."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imagekit.config import Profile
from imagekit.engines import engine_for
from imagekit.errors import MissingPartError, ToolError

ABSENT = "imagekit-no-such-image:0"


def with_engine(profile: Profile, **settings: str) -> Profile:
    return profile.model_copy(update={"engine": profile.engine.model_copy(update=settings)})


@pytest.mark.engine
def test_docker_describe_of_a_missing_image_is_a_tool_error(site_profile: Profile, local_env) -> None:  # type: ignore[no-untyped-def]
    engine = engine_for(with_engine(site_profile, name="docker"))
    assert engine.exists(ABSENT) is False
    engine.remove([ABSENT])  # nothing to remove is not an error
    with pytest.raises(ToolError, match=f"docker image inspect {ABSENT} failed: .*[Nn]o such image"):
        engine.describe(ABSENT, [ABSENT], Path("unused.log"))  # type: ignore[attr-defined]


@pytest.mark.engine
def test_an_unreachable_docker_host_is_a_tool_error(
    site_profile: Profile, local_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/absent.sock")
    engine = engine_for(with_engine(site_profile, name="docker"))
    with pytest.raises(ToolError, match=r"image inspect .* failed: Cannot connect to the Docker daemon"):
        engine.exists(ABSENT)


@pytest.mark.engine
@pytest.mark.podman
def test_podman_describe_of_a_missing_image_is_a_tool_error(site_profile: Profile, require_part) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("podman") is None:
        require_part("podman is not installed: apt-get install -y podman")
    engine = engine_for(with_engine(site_profile, name="podman"))
    assert engine.exists(ABSENT) is False
    with pytest.raises(ToolError, match=f"podman image inspect {ABSENT} failed: .*image not known"):
        engine.describe(ABSENT, [ABSENT], Path("unused.log"))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "setting"),
    [("docker", "docker_binary"), ("podman", "podman_binary"), ("buildah", "buildah_binary")],
)
def test_the_configured_binary_is_the_one_run(
    site_profile: Profile, tmp_path: Path, name: str, setting: str
) -> None:
    absent = str(tmp_path / "bin" / name)
    engine = engine_for(with_engine(site_profile, name=name, **{setting: absent}))
    with pytest.raises(MissingPartError, match=f"{absent} is missing: .*engine.{setting}"):
        engine.exists(ABSENT)

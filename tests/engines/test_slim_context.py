"""Code-only rebuilds on Docker's legacy builder start the runtime stage FROM the image of its
foundation (up to the last COTS layer) and leave the COTS archives out of the context: the same
image as the full build, without re-sending the archives. Anything else is the full build."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from imagekit.config import Profile
from imagekit.engines import BuiltImage, engine_for
from imagekit.engines.docker import DockerEngine
from imagekit.manifest import load_manifest
from imagekit.pipeline import build_processor, default_render_dir

from .conftest import ProcessorFactory, cots_tarball

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.slow]

STATE = Path(".imagekit") / "foundation-image.json"


def build(directory: Path, profile: Profile, tags: list[str]) -> tuple[BuiltImage, list[str]]:
    lines: list[str] = []
    outcome = build_processor(directory, profile, on_line=lines.append)
    # its id too: the next build of the directory moves the tags, and this image would stay dangling
    tags.extend([*outcome.image.tags, outcome.image.id])
    return outcome.image, lines


def inspect(docker: str, image: str) -> dict[str, object]:
    done = subprocess.run([docker, "image", "inspect", image], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)[0]  # type: ignore[no-any-return]


def recorded(directory: Path) -> str:
    return str(json.loads((directory / STATE).read_text(encoding="utf-8"))["image"])


def unique_cots(directory: Path) -> None:
    """Another tool-a archive (of a size no other test uses), its sha256 in the manifest."""
    manifest = directory / "processor.yaml"
    old = load_manifest(directory).processor.cots[0].sha256
    new = cots_tarball(
        directory / "cots" / "tool-a-1.0.tar.gz", "tool-a", 32 * secrets.randbelow(4096) + 96 * 1024
    )
    manifest.write_text(manifest.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


@pytest.fixture
def legacy(site_profile: Profile) -> str:
    engine = engine_for(site_profile)
    if not isinstance(engine, DockerEngine) or engine.name != "docker" or engine.has_buildx:
        pytest.skip("slim contexts are for Docker's legacy builder (this engine has buildx or is not docker)")
    return site_profile.engine.docker


def test_a_code_change_builds_the_same_image_without_the_cots(
    make_processor: ProcessorFactory, site_profile: Profile, docker_cleanup: list[str], legacy: str
) -> None:
    directory = make_processor()
    first, lines = build(directory, site_profile, docker_cleanup)
    assert lines[0].startswith("imagekit: full build context (no foundation image recorded")
    foundation = recorded(directory)

    script = directory / "bin" / "demo"
    script.write_text(script.read_text(encoding="utf-8") + "# a scientist's one-line fix\n", encoding="utf-8")
    slim, lines = build(directory, site_profile, docker_cleanup)
    assert lines[0].startswith(
        f"imagekit: slim context: the runtime stage starts from its foundation image {foundation}"
    )
    assert "cots/tool-a.tar, cots/tool-b.tar" in lines[0]
    assert not (directory / ".imagekit" / "slim-context").exists(), "the slim context is removed"
    assert recorded(directory) == foundation
    assert slim.id != first.id

    # below the code, the same layers as the full build; the config differs only where code does
    app = next(i for i, layer in enumerate(first.layers) if "/opt/processor/bin/" in layer.created_by)
    below = len(first.diff_ids) - (len(first.layers) - app)
    assert slim.diff_ids[:below] == first.diff_ids[:below]
    assert slim.diff_ids[below] != first.diff_ids[below], "the changed code is a new layer"
    assert len(slim.diff_ids) == len(first.diff_ids)
    before, after = inspect(legacy, first.id), inspect(legacy, slim.id)
    # the parent step's image id is the only setting a code change changes
    changed = {"Image"}
    config = {key: value for key, value in before["Config"].items() if key not in changed}  # type: ignore[attr-defined]
    assert {key: value for key, value in after["Config"].items() if key not in changed} == config  # type: ignore[attr-defined]
    assert after["Os"] == before["Os"] and after["Architecture"] == before["Architecture"]

    # a full `docker build` of the rendered directory reuses the foundation and every later step
    full_tag = f"{first.tags[0].split(':')[0]}:full"
    docker_cleanup.append(full_tag)
    context = default_render_dir(load_manifest(directory))
    done = subprocess.run(
        [legacy, "build", "--network", site_profile.engine.network, "--tag", full_tag, str(context)],
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert f" ---> {foundation.removeprefix('sha256:')[:12]}" in done.stdout.splitlines()
    assert "Running in" not in done.stdout, "every step is a cache hit"
    assert inspect(legacy, full_tag)["Id"] == slim.id


def test_a_changed_cots_archive_is_a_full_build(
    make_processor: ProcessorFactory, site_profile: Profile, docker_cleanup: list[str], legacy: str
) -> None:
    directory = make_processor()
    build(directory, site_profile, docker_cleanup)
    foundation = recorded(directory)
    unique_cots(directory)

    _, lines = build(directory, site_profile, docker_cleanup)
    assert lines[0] == (
        "imagekit: full build context (base, site stage, system packages or COTS changed "
        "since the last build)"
    )
    assert recorded(directory) != foundation, "the new foundation is recorded"
    assert inspect(legacy, recorded(directory))["Id"] == recorded(directory)

    (directory / "conf" / "demo.toml").write_text("threshold = 0.7\n", encoding="utf-8")
    _, lines = build(directory, site_profile, docker_cleanup)
    assert lines[0].startswith(
        f"imagekit: slim context: the runtime stage starts from its foundation image {recorded(directory)}"
    )


def test_a_removed_foundation_image_is_a_full_build(
    make_processor: ProcessorFactory, site_profile: Profile, docker_cleanup: list[str], legacy: str
) -> None:
    directory = make_processor()
    unique_cots(directory)  # no other test's image shares this foundation
    first, _ = build(directory, site_profile, docker_cleanup)
    foundation = recorded(directory)
    subprocess.run([legacy, "image", "rm", *first.tags], capture_output=True, check=True)
    gone = subprocess.run([legacy, "image", "inspect", foundation], capture_output=True, check=False)
    assert gone.returncode != 0, "removing the image removed its untagged parents, the foundation too"

    again, lines = build(directory, site_profile, docker_cleanup)
    assert (
        lines[0]
        == f"imagekit: full build context (the foundation image {foundation} is no longer on the engine)"
    )
    assert again.diff_ids and recorded(directory) != foundation


def test_no_cache_is_a_full_build(
    make_processor: ProcessorFactory, site_profile: Profile, docker_cleanup: list[str], legacy: str
) -> None:
    directory = make_processor()
    build(directory, site_profile, docker_cleanup)
    lines: list[str] = []
    outcome = build_processor(directory, site_profile, on_line=lines.append, no_cache=True)
    docker_cleanup.extend(outcome.image.tags)
    assert lines[0] == "imagekit: full build context (--no-cache)"

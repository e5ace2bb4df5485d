"""Builds on the real Docker engine (the legacy builder here): layers, failures, smoke tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from imagekit.config import Profile
from imagekit.engines import BuiltImage
from imagekit.errors import BuildError, SmokeTestError
from imagekit.pipeline import build_processor, default_render_dir, require_all_passed, smoke_test_processor

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.slow]

# what writes a layer under the legacy builder (WORKDIR too, when it creates the directory)
LAYER_INSTRUCTIONS = {"RUN", "COPY", "ADD", "WORKDIR"}


def build(directory: Path, profile: Profile, tags: list[str]) -> BuiltImage:
    lines: list[str] = []
    outcome = build_processor(directory, profile, on_line=lines.append)
    tags.extend(outcome.image.tags)
    assert any(line.startswith("Step ") for line in lines), "the engine's output is streamed line by line"
    return outcome.image


def layers_before_app(directory: Path) -> int:
    """Layers of the image below the first app file: the site stage's, then the final stage's."""
    structure = DockerfileParser(path=str(default_render_dir_of(directory) / "Dockerfile")).structure
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for item in structure:
        if item["instruction"] == "FROM":
            current = stages.setdefault(item["value"].split()[-1], [])
        current.append(f"{item['instruction']} {item['value']}")
    final = list(stages)[-1]
    assert stages[final][0] == f"FROM site AS {final}", "the shipped stage starts from the site stage"
    count = sum(line.split()[0] in LAYER_INSTRUCTIONS for line in stages["site"])
    for line in stages[final][1:]:
        if line.startswith("COPY ") and "--from" not in line and "/opt/processor/" in line:
            return count
        count += line.split()[0] in LAYER_INSTRUCTIONS
    raise AssertionError("no app COPY in the final stage")


def default_render_dir_of(directory: Path) -> Path:
    from imagekit.manifest import load_manifest

    return default_render_dir(load_manifest(directory))


def test_code_change_reuses_every_cots_and_system_layer(
    make_processor, site_profile: Profile, docker_cleanup: list[str]
) -> None:  # type: ignore[no-untyped-def]
    directory = make_processor()
    first = build(directory, site_profile, docker_cleanup)
    script = directory / "bin" / "demo"
    script.write_text(script.read_text() + "# a scientist's one-line fix\n")
    second = build(directory, site_profile, docker_cleanup)

    assert len(first.diff_ids) == len(second.diff_ids)
    base_layers = 1  # the bootstrapped base is one imported layer
    shared = base_layers + layers_before_app(directory)
    assert first.diff_ids[:shared] == second.diff_ids[:shared], (
        "CA, system-package and COTS layers must be reused"
    )
    changed = [i for i, (a, b) in enumerate(zip(first.diff_ids, second.diff_ids, strict=True)) if a != b]
    assert changed and min(changed) == shared, "the first layer that changes is the app's own"
    dockerfile = (default_render_dir_of(directory) / "Dockerfile").read_text()
    assert dockerfile.index("apt-get install") < dockerfile.index("ADD cots/tool-a.tar /")
    assert dockerfile.index("ADD cots/tool-b.tar /") < dockerfile.index("COPY bin/ /opt/processor/bin/")


def test_a_failing_run_names_the_instruction_and_tags_nothing(
    make_processor, site_profile: Profile, docker_cleanup: list[str]
) -> None:  # type: ignore[no-untyped-def]
    directory = make_processor(runtime_packages=(), app_install="echo compiling; exit 3")
    with pytest.raises(BuildError) as failed:
        build(directory, site_profile, docker_cleanup)
    message = failed.value.message
    assert "RUN echo compiling; exit 3" in message
    assert "build.log" in message
    assert "compiling" in (failed.value.hint or ""), "the last lines of the failing step are shown"
    from imagekit.engines import engine_for

    name = directory.name
    assert not engine_for(site_profile).exists(f"{name}:1.0.0"), (
        "no image may carry the version after a failure"
    )


def test_smoke_tests_pass_and_fail_inside_the_image(
    make_processor, site_profile: Profile, docker_cleanup: list[str]
) -> None:  # type: ignore[no-untyped-def]
    good = make_processor(runtime_packages=())
    build(good, site_profile, docker_cleanup)
    _, outcomes = smoke_test_processor(good, site_profile)
    assert [(o.test.name, o.passed) for o in outcomes] == [("version", True), ("cots", True)]
    require_all_passed("good", outcomes)

    bad = make_processor(runtime_packages=(), expect_stdout="a version that is not there")
    build(bad, site_profile, docker_cleanup)
    _, outcomes = smoke_test_processor(bad, site_profile)
    failing = [o for o in outcomes if not o.passed]
    assert [o.test.name for o in failing] == ["version"]
    assert "does not contain" in failing[0].reason
    with pytest.raises(SmokeTestError, match="1 of 2 smoke tests failed: version"):
        require_all_passed("bad", outcomes)


def test_smoke_tests_run_as_the_image_user_without_network(
    make_processor, site_profile: Profile, docker_cleanup: list[str]
) -> None:  # type: ignore[no-untyped-def]
    from imagekit.engines import engine_for

    directory = make_processor(runtime_packages=())
    image = build(directory, site_profile, docker_cleanup)
    engine = engine_for(site_profile)
    whoami = engine.run(image.tags[0], ["id", "-u"], user="1000:1000", timeout_s=60)
    assert whoami.stdout.strip() == "1000"
    interfaces = engine.run(image.tags[0], ["cat", "/proc/net/dev"], user="1000:1000", timeout_s=60)
    assert "eth0" not in interfaces.stdout and "lo:" in interfaces.stdout
    slow = engine.run(image.tags[0], ["sleep", "30"], user="1000:1000", timeout_s=2)
    assert slow.timed_out

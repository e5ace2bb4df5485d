"""The rendered examples build on the real engine, pass their smoke tests, and re-ship only the code."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.catalog import BaseRef
from imagekit.config import Profile
from imagekit.engines import engine_for
from imagekit.manifest import load_manifest
from imagekit.render import render, source_info
from imagekit.smoke import run_smoke_tests

from .render_parts import EXAMPLES

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def build(profile: Profile, bases: dict[str, object], directory: Path, out: Path, cleanup: list[str]) -> str:
    manifest = load_manifest(directory)
    base = bases[manifest.processor.base.profile]
    assert isinstance(base, BaseRef)
    render(manifest, out, base=base, site=profile.site, source=source_info(directory))
    tag = f"imagekit-render-test/{manifest.processor.processor.name}:{uuid.uuid4().hex[:8]}"
    cleanup.append(tag)
    log_file = out.parent / f"{out.name}.log"
    engine_for(profile).build(out, [tag], log_file=log_file, on_line=lambda _: None, source_date_epoch=None)
    return tag


@pytest.mark.parametrize("name", ["olci-l1-demo", "sst-cdr-demo", "s2-cloudmask-demo"])
def test_example_builds_and_passes_its_smoke_tests(
    site_profile: Profile,
    local_env: dict[str, object],
    docker_cleanup: list[str],
    tmp_path: Path,
    name: str,
) -> None:
    tag = build(site_profile, local_env, EXAMPLES[name], tmp_path / "context", docker_cleanup)
    processor = load_manifest(EXAMPLES[name]).processor
    outcomes = run_smoke_tests(engine_for(site_profile), tag, processor)
    assert [(o.test.name, o.reason) for o in outcomes if not o.passed] == []
    assert len(outcomes) == len(processor.tests)


STEP = re.compile(r"^(?:Step \d+/\d+ : |STEP \d+/\d+: )(?P<instruction>.+)$")
BUILDX_STEP = re.compile(r"^#(?P<id>\d+) \[[^\]]*\] (?P<instruction>.+)$")


def cache_use(log: Path) -> list[tuple[str, bool]]:
    """(instruction, taken from the cache) of each build step, from the classic builders' and
    buildx's plain output."""
    steps: list[tuple[str, bool]] = []
    buildx: dict[str, int] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        if match := STEP.match(line):
            steps.append((match["instruction"], False))
        elif match := BUILDX_STEP.match(line):
            buildx[match["id"]] = len(steps)
            steps.append((match["instruction"], False))
        elif "Using cache" in line and steps:
            steps[-1] = (steps[-1][0], True)
        elif line.endswith(" CACHED") and line.split(" ")[0][1:] in buildx:
            index = buildx[line.split(" ")[0][1:]]
            steps[index] = (steps[index][0], True)
    return steps


def test_a_configuration_change_rebuilds_only_the_app_layers(
    site_profile: Profile,
    local_env: dict[str, object],
    docker_cleanup: list[str],
    copy_processor: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    directory = copy_processor("olci-l1-demo")
    build(site_profile, local_env, directory, tmp_path / "first", docker_cleanup)
    conf = directory / "conf" / "olci-l1.toml"
    with conf.open("a", encoding="utf-8") as changed:
        changed.write(f"# a change no earlier build has seen: {uuid.uuid4()}\n")
    build(site_profile, local_env, directory, tmp_path / "second", docker_cleanup)
    steps = [(i, cached) for i, cached in cache_use(tmp_path / "second.log") if not i.startswith("FROM")]
    first_rebuilt = next(index for index, (_, cached) in enumerate(steps) if not cached)
    assert steps[first_rebuilt][0].startswith("COPY conf/ "), steps
    assert all(cached for _, cached in steps[:first_rebuilt])

"""Layer order and cache invariance, asserted on the Dockerfile as a real parser reads it.

A change of app code, configuration or the lock must leave every instruction before it, and every
file those instructions copy, as it was: then the engine reuses those layers and ships only the code.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from imagekit.manifest import load_manifest
from imagekit.render import RenderResult

from .render_parts import DIGEST, EXAMPLES, SOURCE, Render

Instruction = tuple[str, str]


def stages(result: RenderResult) -> dict[str, list[Instruction]]:
    """Stage name -> its (instruction, value) list, FROM first; comments dropped."""
    parsed = DockerfileParser(path=str(result.definition))
    found: dict[str, list[Instruction]] = {}
    current: list[Instruction] = []
    for item in parsed.structure:
        if item["instruction"] == "COMMENT":
            continue
        if item["instruction"] == "FROM":
            current = found.setdefault(item["value"].split(" AS ")[-1], [])
        current.append((item["instruction"], item["value"]))
    return found


def kind(instruction: Instruction, app_sources: set[str]) -> str:
    """What a runtime-stage instruction is for, read from the instruction alone."""
    name, value = instruction
    words = shlex.split(value) if name in {"COPY", "RUN"} else value.split()
    if (name == "COPY" and words[0].startswith("--from=cots-")) or (
        name == "ADD" and value.startswith("cots/")
    ):
        return "cots"
    if name == "COPY" and words[0] == "--from=builder":
        return "builder artifacts"
    if name == "COPY" and words[0] in app_sources:
        return "app files"
    if name == "COPY" and words[0].endswith(".lock"):
        return "python lock"
    if name == "RUN" and "--require-hashes" in words:
        return "python lock install"
    if (name == "RUN" and "venv" in words) or (name == "ENV" and "VIRTUAL_ENV=" in value):
        return "python env"
    if name == "RUN" and ("apt-get" in words or "dnf" in words):
        return "system packages"
    if name == "RUN" and "useradd" in words:
        return "user"
    return name


def runtime_kinds(name: str, result: RenderResult) -> list[str]:
    processor = load_manifest(EXAMPLES[name]).processor
    app_sources = {spec.from_ for spec in (processor.app.copy_ if processor.app else [])}
    kinds = [kind(i, app_sources) for i in stages(result)["runtime"]]
    return [k for index, k in enumerate(kinds) if index == 0 or k != kinds[index - 1]]


def test_stages_come_in_order_from_the_digest_pinned_base(render_example: Render) -> None:
    parsed = stages(render_example("olci-l1-demo"))
    assert list(parsed) == ["site", "builder", "runtime"], "a local COTS needs no stage"
    assert parsed["site"][0] == (
        "FROM",
        f"127.0.0.1:5000/imagekit/base/debian-12-python@{DIGEST} AS site",
    )
    assert [i[0] for i in parsed["site"]] == ["FROM", "COPY", "RUN", "ENV"]
    assert parsed["site"][1] == ("COPY", "site/ca-1.crt /usr/local/share/ca-certificates/imagekit/")
    for stage in ("builder", "runtime"):
        assert parsed[stage][0] == ("FROM", f"site AS {stage}")


def test_olci_runtime_layers_go_from_stable_to_volatile(render_example: Render) -> None:
    assert runtime_kinds("olci-l1-demo", render_example("olci-l1-demo")) == [
        "FROM",
        "SHELL",
        "user",
        "cots",
        "ENV",
        "python env",
        "builder artifacts",
        "WORKDIR",
        "app files",
        "RUN",
        "ENV",
        "LABEL",
        "USER",
        "ENTRYPOINT",
    ]


def test_sst_runtime_installs_the_lock_before_the_app(render_example: Render) -> None:
    assert runtime_kinds("sst-cdr-demo", render_example("sst-cdr-demo")) == [
        "FROM",
        "SHELL",
        "user",
        "python env",
        "python lock",
        "python lock install",
        "WORKDIR",
        "app files",
        "RUN",
        "ENV",
        "LABEL",
        "USER",
        "ENTRYPOINT",
    ]


def test_el9_runtime_has_system_packages_before_cots(render_example: Render) -> None:
    kinds = runtime_kinds("el9-demo", render_example("el9-demo"))
    assert kinds.index("user") < kinds.index("system packages") < kinds.index("cots")
    assert kinds.index("cots") < kinds.index("builder artifacts") < kinds.index("LABEL")
    assert kinds[-3:] == ["LABEL", "USER", "ENTRYPOINT"]


def test_a_local_cots_is_added_once_from_its_repacked_tar(render_example: Render) -> None:
    result = render_example("olci-l1-demo")
    runtime = stages(result)["runtime"]
    assert [i for i in runtime if i[0] == "ADD"] == [("ADD", "cots/olci-lut.tar /")]
    lines = result.definition.read_text(encoding="utf-8").splitlines()
    comment = lines[lines.index("ADD cots/olci-lut.tar /") - 1]
    assert comment.startswith("# COTS olci-lut 1.0") and "checked against its sha256" in comment
    assert "repacked for /opt/olci-lut by imagekit" in comment


def test_a_remote_cots_stage_verifies_then_unpacks_alone(render_example: Render) -> None:
    cots = stages(render_example("el9-demo"))["cots-snap-lite"]
    assert cots[1] == (
        "ADD",
        "https://downloads.example.org/snap-lite/snap-lite-9.0.0.tar.gz /tmp/cots/snap-lite-9.0.0.tar.gz",
    )
    run = cots[2][1]
    assert run.index("sha256sum --check --strict") < run.index("tar -xf")
    assert [i[0] for i in cots] == ["FROM", "ADD", "RUN"], "nothing of the app reaches a COTS stage"


def test_labels_parse_back_to_the_context_values(render_example: Render) -> None:
    parsed = DockerfileParser(path=str(render_example("olci-l1-demo").definition))
    labels = parsed.labels
    assert labels["org.opencontainers.image.created"] == SOURCE.created
    assert json.loads(labels["imagekit.executables"])[0]["command"] == ["olci-l1", "calibrate"]
    last = [item["instruction"] for item in parsed.structure if item["instruction"] != "COMMENT"][-3:]
    assert last == ["LABEL", "USER", "ENTRYPOINT"]


def cache_keys(result: RenderResult) -> list[tuple[str, str, str, str]]:
    """(stage, instruction, value, sha256 of the context files it copies) of every instruction."""
    keys = []
    for stage, instructions in stages(result).items():
        for name, value in instructions:
            content = hashlib.sha256()
            words = shlex.split(value)
            if name in {"COPY", "ADD"} and not words[0].startswith("--from=") and "://" not in words[0]:
                for source in words[:-1]:
                    path = result.context_dir / source
                    for file in sorted([path] if path.is_file() else path.rglob("*")):
                        if file.is_file():
                            content.update(str(file.relative_to(result.context_dir)).encode())
                            content.update(file.read_bytes())
            keys.append((stage, name, value, content.hexdigest()))
    return keys


def first_difference(before: list[tuple[str, str, str, str]], after: list[tuple[str, str, str, str]]) -> int:
    return next(i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b)


@pytest.mark.parametrize(
    ("name", "edit", "first_changed"),
    [
        (
            "olci-l1-demo",
            lambda d: (d / "conf" / "olci-l1.toml").write_text("default_band = 'Oa02'\n"),
            "conf/",
        ),
        (
            "sst-cdr-demo",
            lambda d: (d / "package" / "sst_cdr" / "__init__.py").write_text("# new\n"),
            "package/",
        ),
        ("sst-cdr-demo", lambda d: (d / "data" / "sample.csv").write_text("region,date,sst_k\n"), "data/"),
        ("sst-cdr-demo", lambda d: (d / "requirements.lock").write_text("# emptied\n"), "requirements.lock"),
    ],
)
def test_an_app_or_lock_change_leaves_every_earlier_layer_alone(
    render_example: Render,
    copy_processor: Callable[[str], Path],
    name: str,
    edit: Callable[[Path], object],
    first_changed: str,
) -> None:
    directory = copy_processor(name)
    before = cache_keys(render_example(directory))
    edit(directory)
    after = cache_keys(render_example(directory))
    changed = first_difference(before, after)
    stage, instruction, value, _ = after[changed]
    assert (stage, instruction) == ("runtime", "COPY") and value.startswith(first_changed)
    assert [key[:3] for key in before] == [key[:3] for key in after], "no instruction changes, only content"
    unchanged_stages = {key[0] for key in before[:changed]}
    assert {"site", "runtime"} <= unchanged_stages


def test_the_cots_and_site_layers_do_not_depend_on_any_app_file(render_example: Render) -> None:
    result = render_example("olci-l1-demo")
    copied = {
        source
        for stage, name, value, _ in cache_keys(result)
        if (stage == "site" and name == "COPY") or name == "ADD"
        for source in shlex.split(value)[:-1]
    }
    assert copied == {"site/ca-1.crt", "cots/olci-lut.tar"}

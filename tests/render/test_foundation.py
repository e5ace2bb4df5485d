"""Render records where the runtime stage's foundation ends (up to its last COTS layer) and a key
over what that layer's image depends on: the docker engine builds a code change from it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from imagekit.config import SiteSettings
from imagekit.errors import InputError
from imagekit.render.foundation import FOUNDATION_FILE, instructions, read_foundation

from .render_parts import EXAMPLES, Render


def test_the_foundation_ends_with_the_last_cots_layer_and_its_env(render_example: Render) -> None:
    result = render_example("olci-l1-demo")
    foundation = read_foundation(result.context_dir)
    assert foundation is not None
    text = result.definition.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[foundation.first_line] == "FROM site AS runtime"
    kept = [i for i in instructions(text) if foundation.first_line <= i.first_line < foundation.end_line]
    assert [i.text.split()[0] for i in kept] == ["FROM", "SHELL", "RUN", "ADD", "ENV"]
    assert kept[-2].text == "ADD cots/olci-lut.tar /" and "OLCI_LUT_DIR" in kept[-1].text
    assert lines[foundation.end_line].startswith('ENV PATH="/opt/venv/bin'), "the venv follows"
    assert foundation.files == ["cots/olci-lut.tar"]
    ignore = (result.context_dir / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert f"!{FOUNDATION_FILE}" not in ignore, "never sent to the engine"


def test_steps_are_counted_as_the_builder_counts_them(render_example: Render) -> None:
    for name in EXAMPLES:
        result = render_example(name)
        text = result.definition.read_text(encoding="utf-8")
        parsed = [
            (item["startline"], item["endline"])
            for item in DockerfileParser(fileobj=None, path=str(result.definition)).structure
            if item["instruction"] != "COMMENT"
        ]
        assert [(i.first_line, i.end_line - 1) for i in instructions(text)] == parsed, name
        assert [i.step for i in instructions(text)] == list(range(1, len(parsed) + 1))
        foundation = read_foundation(result.context_dir)
        if foundation is not None:
            assert foundation.steps == len(parsed)
            assert instructions(text)[foundation.step - 1].end_line == foundation.end_line


def test_no_local_cots_no_foundation(render_example: Render) -> None:
    rendered = {name: read_foundation(render_example(name).context_dir) for name in EXAMPLES}
    without = [name for name, foundation in rendered.items() if foundation is None]
    for name in without:
        assert "cots/" not in (render_example(name).context_dir / ".dockerignore").read_text()
    assert rendered["olci-l1-demo"] is not None


def _key(render_example: Render, directory: Path, **overrides: object) -> str:
    foundation = read_foundation(render_example(directory, **overrides).context_dir)
    assert foundation is not None
    return foundation.key


def test_the_key_follows_the_foundation_not_the_code(
    render_example: Render, copy_processor: Callable[[str], Path], site: SiteSettings, tmp_path: Path
) -> None:
    directory = copy_processor("olci-l1-demo")
    key = _key(render_example, directory)
    assert _key(render_example, directory) == key, "a pure function of the inputs"

    (directory / "conf" / "olci-l1.toml").write_text("changed = true\n", encoding="utf-8")
    (directory / "c" / "olci_calibrate.c").write_text("int main(void) { return 0; }\n", encoding="utf-8")
    assert _key(render_example, directory) == key, "code and builder changes keep the foundation"

    ca = tmp_path / "other-ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n", encoding="utf-8")
    other_ca = site.model_copy(update={"ca_certificates": [str(ca)]})
    assert _key(render_example, directory, site=other_ca) != key, "a site CA file is read by the site stage"

    manifest = directory / "processor.yaml"
    yaml = manifest.read_text(encoding="utf-8")
    manifest.write_text(yaml.replace("strip_components: 1", "strip_components: 0"), encoding="utf-8")
    assert _key(render_example, directory) != key, "the repack stamp makes the archive's bytes"
    manifest.write_text(
        yaml.replace("OLCI_LUT_DIR: /opt/olci-lut", "OLCI_LUT_DIR: /opt/lut"), encoding="utf-8"
    )
    assert _key(render_example, directory) != key, "the COTS's ENV is part of the foundation"


def test_no_processor_file_takes_its_place(
    render_example: Render, copy_processor: Callable[[str], Path]
) -> None:
    directory = copy_processor("olci-l1-demo")
    (directory / FOUNDATION_FILE).write_text("{}\n", encoding="utf-8")
    manifest = directory / "processor.yaml"
    yaml = manifest.read_text(encoding="utf-8")
    manifest.write_text(yaml.replace("{from: conf/,", "{from: foundation.json,"), encoding="utf-8")
    with pytest.raises(InputError, match=r"foundation\.json is a name imagekit writes itself"):
        render_example(directory)

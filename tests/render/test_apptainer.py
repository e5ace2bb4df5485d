"""`--target apptainer`: a definition wrapping the pushed image, parsed back with spython."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from spython.main.parse.parsers import SingularityParser

from imagekit.errors import InputError
from imagekit.manifest import load_manifest

from .render_parts import EXAMPLES, IMAGE_REF, SOURCE, Render


def sections(definition: Path) -> dict[str, str]:
    """Section name -> its body, as Apptainer splits a definition file."""
    found: dict[str, str] = {}
    name = "header"
    for line in definition.read_text(encoding="utf-8").splitlines():
        if re.match(r"^%\w+", line):
            name = line[1:].split()[0]
            found[name] = ""
        else:
            found[name] = found.get(name, "") + line + "\n"
    return found


@pytest.mark.parametrize("name", EXAMPLES)
def test_definition_parses_back_with_spython(render_example: Render, name: str) -> None:
    result = render_example(name, "apptainer")
    assert result.files == ["apptainer.def"], "the definition bootstraps from the registry: no context"
    recipe = SingularityParser(str(result.definition)).recipe["spython-base"]
    manifest = load_manifest(EXAMPLES[name]).processor
    assert recipe.fromHeader == IMAGE_REF
    labels = dict(line.split(" ", 1) for line in recipe.labels)
    assert labels["org.opencontainers.image.version"] == manifest.processor.version
    assert labels["org.opencontainers.image.revision"] == SOURCE.revision
    assert sorted(recipe.environ) == sorted(f'{k}="{v}"' for k, v in manifest.runtime.env.items())
    assert recipe.cmd == "exec " + " ".join(manifest.runtime.entrypoint) + ' "$@"'
    script = [line for line in recipe.install if line.endswith(">> /tests.sh")]
    for test in manifest.tests:
        assert any(f"# {test.name}" in line for line in script), f"smoke test {test.name} is in %test"


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_test_section_is_valid_shell(render_example: Render, name: str, tmp_path: Path) -> None:
    body = tmp_path / "test.sh"
    body.write_text(sections(render_example(name, "apptainer").definition)["test"], encoding="utf-8")
    checked = subprocess.run(["sh", "-n", str(body)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


STUBS = {
    "olci-l1": """case "$1" in
    --version) echo "olci-l1 1.2.0" ;;
    calibrate) [ "$2" = --band ] && exit 1; printf 'Oa01 100 -> 243.7500\\nOa01 200 -> %s\\n' "$SECOND" ;;
esac""",
    "olci-calibrate": 'echo "olci-calibrate 1.2.0"',
    "olci-lut": 'echo "OLCI LUT 1.0 (4 bands)"',
}


@pytest.mark.parametrize(("second", "passes"), [("493.7500", True), ("493.7501", False)])
def test_the_test_section_judges_like_the_smoke_runner(
    render_example: Render, tmp_path: Path, second: str, passes: bool
) -> None:
    """olci's %test against stand-in commands: the right output passes, a wrong line fails."""
    script = tmp_path / "test.sh"
    script.write_text(sections(render_example("olci-l1-demo", "apptainer").definition)["test"])
    for command, body in STUBS.items():
        (tmp_path / command).write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
        (tmp_path / command).chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "SECOND": second}
    ran = subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env)
    assert ran.returncode == (0 if passes else 1), ran.stderr
    assert ("FAIL calibrate-oa01: stdout does not contain" in ran.stderr) is not passes


def test_an_unpinned_image_ref_is_refused(render_example: Render) -> None:
    with pytest.raises(InputError, match="pinned by digest"):
        render_example("sst-cdr-demo", "apptainer", image_ref="127.0.0.1:5000/imagekit/sst-cdr-demo:0.4.0")

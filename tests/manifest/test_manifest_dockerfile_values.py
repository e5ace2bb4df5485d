"""Values that become one Dockerfile line are checked at validation, with their line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagekit.errors import ManifestError
from imagekit.manifest import load_manifest

GOOD = """schema_version: 1
processor: {name: values-demo, version: 1.0.0}
base: {profile: debian-12}
build:
  copy: [{from: src/, to: /src/}]
  commands:
    - make -C /src
app:
  copy: [{from: src/, to: /opt/processor/src/}]
  install: "echo installed"
runtime:
  env:
    MODE: "fast"
labels:
  org.example.team: "eo"
tests: [{name: t, run: [echo, ok], expect_stdout: ok}]
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "processor.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def test_good_values_validate(tmp_path: Path) -> None:
    assert load_manifest(write(tmp_path, GOOD)).processor.labels == {"org.example.team": "eo"}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("- make -C /src", '- "make -C /src # all"', "7:7: build.commands[0]: a '#' comment would swallow"),
        ("- make -C /src", "- make 'unclosed", "7:7: build.commands[0]: not valid shell"),
        (
            'install: "echo installed"',
            'install: "echo a\\necho b"',
            "10:12: app.install: a command is one line",
        ),
        ('MODE: "fast"', 'MODE: "fast\\nRUN evil"', "13:11: runtime.env.MODE: must be one line"),
        ('org.example.team: "eo"', 'imagekit.executables: "[]"', "15:3: labels.imagekit.executables: "),
        ('org.example.team: "eo"', '"bad key": "eo"', "15:3: labels.bad key: a label key is letters"),
        (
            'org.example.team: "eo"',
            'org.example.team: "a\\nb"',
            "15:21: labels.org.example.team: must be one line",
        ),
    ],
)
def test_each_rule_names_line_and_column(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(ManifestError) as refused:
        load_manifest(write(tmp_path, GOOD.replace(old, new)))
    assert len(refused.value.problems) == 1, refused.value.message
    assert expected in refused.value.message, refused.value.message

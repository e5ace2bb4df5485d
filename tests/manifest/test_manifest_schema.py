"""The JSON Schema of processor.yaml v1: shipped as generated, strict, described, and it accepts
every example processor in the repository and the known-good manifest."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from manifest_cases import GOOD
from ruamel.yaml import YAML

from imagekit.manifest import json_schema, load_manifest, validate_paths

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "imagekit" / "manifest" / "processor.schema.json"
TESTS_BLOCK = 'tests:\n  - name: version\n    run: ["olci-l1", "--version"]\n    expect_stdout: "1.4.0"\n'
EXAMPLES = sorted(REPO.glob("processors/*/processor.yaml"))


def _yaml(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


def _objects(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for value in node.values():
            found += _objects(value)
    elif isinstance(node, list):
        for value in node:
            found += _objects(value)
    return found


def test_the_shipped_schema_is_the_generated_one() -> None:
    assert json.loads(SHIPPED.read_text(encoding="utf-8")) == json_schema(), (
        "regenerate: python -c 'from imagekit.manifest.model import json_schema_text as t; "
        'open("imagekit/manifest/processor.schema.json", "w").write(t())\''
    )


def test_the_schema_is_valid_and_strict() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for node in _objects(schema):
        if "properties" in node or "patternProperties" in node:  # a model, or env names
            assert node.get("additionalProperties") is False, node.get("title")
    for name, definition in schema["$defs"].items():
        assert definition["description"], name
        for key, field in definition.get("properties", {}).items():
            assert field.get("description"), f"{name}.{key} has no description"


def test_the_schema_accepts_the_known_good_manifest_and_every_example() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    documents = {"known-good": GOOD} | {str(p): p.read_text(encoding="utf-8") for p in EXAMPLES}
    for name, text in documents.items():
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_yaml(text))]
        assert not errors, f"{name}: {errors}"


def test_the_scientist_guide_example_is_valid(proc_dir: Path, tmp_path: Path) -> None:
    guide = (REPO / "docs" / "scientist-guide.md").read_text(encoding="utf-8")
    example = guide.split("```yaml\n", 1)[1].split("```", 1)[0]
    (proc_dir / "processor.yaml").write_text(example, encoding="utf-8")
    assert load_manifest(proc_dir).processor.processor.name == "s3-olci-l1"
    assert validate_paths([proc_dir], data_dir=tmp_path / "data") == [(proc_dir / "processor.yaml", None)]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_every_example_processor_validates_with_check_jsonschema(example: Path) -> None:
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert tool, "check-jsonschema is a test dependency"
    result = subprocess.run(
        [tool, "--schemafile", str(SHIPPED), str(example)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("labels: {}", "labls: {}"),
        ("  version: 1.4.0", "  version: latest"),
        ('OMP_NUM_THREADS: "1"', 'omp_threads: "1"'),
        (
            TESTS
            := 'tests:\n  - name: version\n    run: ["olci-l1", "--version"]\n    expect_stdout: "1.4.0"\n',
            "tests: []\n",
        ),
        ("gpus: 0", "gpus: -1"),
        ('run: ["olci-l1", "--version"]', "run: []"),
        (TESTS_BLOCK, "tests: []\n"),
        ("extract_to: /opt", "extract_to: opt"),
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(old: str, new: str) -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    assert not list(validator.iter_errors(_yaml(GOOD)))
    assert GOOD.count(old) == 1
    assert list(validator.iter_errors(_yaml(GOOD.replace(old, new))))

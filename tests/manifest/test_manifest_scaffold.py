"""`imagekit init`: the scaffold validates as written, its code passes its own smoke tests, and
nothing that exists is ever overwritten."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imagekit.errors import InputError
from imagekit.manifest import json_schema, load_manifest, scaffold


def test_scaffold_validates_as_written(tmp_path: Path) -> None:
    created = scaffold(tmp_path / "my-proc")
    manifest = load_manifest(tmp_path / "my-proc", release=True)
    assert manifest.processor.processor.name == "my-proc"
    assert manifest.processor.base.profile == "debian-12-python"
    assert manifest.processor.tests
    assert sorted(p.relative_to(tmp_path / "my-proc").as_posix() for p in created) == [
        "conf/settings.toml",
        "processor.schema.json",
        "processor.yaml",
        "python/my_proc/__init__.py",
        "python/my_proc/__main__.py",
    ]


def test_scaffold_points_the_editor_at_the_schema(tmp_path: Path) -> None:
    scaffold(tmp_path)
    first_line = (tmp_path / "processor.yaml").read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=processor.schema.json"
    assert json.loads((tmp_path / "processor.schema.json").read_text()) == json_schema()


def test_scaffold_code_passes_its_smoke_tests(tmp_path: Path) -> None:
    """Run each smoke test as the image would: PYTHONPATH and conf/ at their places."""
    directory = tmp_path / "3d-flux.v2"
    scaffold(directory)
    processor = load_manifest(directory).processor
    assert processor.runtime.env["PYTHONPATH"] == "/opt/processor/python"
    for test in processor.tests:
        command = [sys.executable if test.run[0] == "python3" else test.run[0], *test.run[1:]]
        command += (
            ["--config", str(directory / "conf" / "settings.toml")] if "--version" not in command else []
        )
        result = subprocess.run(
            command, cwd=directory / "python", capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == test.expect_exit, result.stderr
        assert test.expect_stdout is not None
        assert test.expect_stdout in result.stdout


@pytest.mark.parametrize(
    ("directory", "name"),
    [("My Processor", "my-processor"), ("S3_OLCI.L1", "s3_olci.l1"), ("--", "my-processor")],
)
def test_the_name_comes_from_the_directory(directory: str, name: str, tmp_path: Path) -> None:
    scaffold(tmp_path / directory)
    assert load_manifest(tmp_path / directory).processor.processor.name == name


def test_an_explicit_name_is_used_and_checked(tmp_path: Path) -> None:
    scaffold(tmp_path / "a", name="olci-l2")
    assert load_manifest(tmp_path / "a").processor.processor.name == "olci-l2"
    with pytest.raises(InputError, match="'Bad Name' cannot be a processor name"):
        scaffold(tmp_path / "b", name="Bad Name")
    assert not (tmp_path / "b").exists()


def test_an_existing_processor_yaml_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "processor.yaml").write_text("mine\n")
    with pytest.raises(InputError, match="already exists"):
        scaffold(tmp_path)
    assert (tmp_path / "processor.yaml").read_text() == "mine\n"
    assert sorted(tmp_path.iterdir()) == [tmp_path / "processor.yaml"]


def test_no_other_existing_file_is_overwritten(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "settings.toml").write_text("mine\n")
    with pytest.raises(InputError, match="never overwrites"):
        scaffold(tmp_path)
    assert (tmp_path / "conf" / "settings.toml").read_text() == "mine\n"
    assert not (tmp_path / "processor.yaml").exists()

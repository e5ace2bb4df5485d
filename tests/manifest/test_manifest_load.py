"""load_manifest's result and validate_paths, the helper behind `imagekit validate PATH...`."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from manifest_cases import CATALOG_IMAGE, GOOD

from imagekit.errors import InputError, ManifestError
from imagekit.manifest import load_manifest, validate_paths


def test_a_directory_or_its_file_loads_the_same(proc_dir: Path) -> None:
    by_directory = load_manifest(proc_dir)
    by_file = load_manifest(str(proc_dir / "processor.yaml"))
    assert by_directory == by_file
    assert by_directory.path == proc_dir / "processor.yaml"
    assert by_directory.directory == proc_dir
    assert by_directory.sha256 == hashlib.sha256(GOOD.encode()).hexdigest()


def test_the_model_holds_the_manifest(proc_dir: Path) -> None:
    processor = load_manifest(proc_dir).processor
    assert processor.processor.version == "1.4.0"
    assert processor.cots[0].env == {"PATH": "/opt/cots/vendor-tool/bin:$PATH"}
    assert processor.app is not None
    assert [(c.from_, c.to) for c in processor.app.copy_] == [
        ("python/", "/opt/processor/python/"),
        ("conf/", "/opt/processor/conf/"),
    ]
    assert processor.executables[0].resources.cores == 2
    assert processor.dependencies.python is not None
    assert processor.dependencies.python.require_hashes is True


def test_source_url_defaults_to_the_ci_project(
    proc_dir: Path, write: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI_PROJECT_URL", "https://git.example.org/eo/from-ci")
    assert load_manifest(proc_dir).processor.processor.source_url == "https://git.example.org/eo/s3-olci-l1"
    write(GOOD.replace("  source_url: https://git.example.org/eo/s3-olci-l1\n", ""))
    assert load_manifest(proc_dir).processor.processor.source_url == "https://git.example.org/eo/from-ci"
    monkeypatch.delenv("CI_PROJECT_URL")
    assert load_manifest(proc_dir).processor.processor.source_url == ""


def test_validate_paths_takes_files_directories_and_trees(proc_dir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "processors"
    shutil.copytree(proc_dir, tree / "good")
    shutil.copytree(proc_dir, tree / "bad")
    (tree / "bad" / "processor.yaml").write_text(GOOD.replace("  version: 1.4.0", "  version: latest"))
    (tree / "not-a-processor").mkdir()
    results = validate_paths(
        [tree, proc_dir / "processor.yaml", tmp_path / "nowhere", tree / "not-a-processor"],
        data_dir=tmp_path / "data",
    )
    assert [(path, type(error)) for path, error in results] == [
        (tree / "bad" / "processor.yaml", ManifestError),
        (tree / "good" / "processor.yaml", type(None)),
        (proc_dir / "processor.yaml", type(None)),
        (tmp_path / "nowhere", InputError),
        (tree / "not-a-processor", InputError),
    ]
    bad = results[0][1]
    assert isinstance(bad, ManifestError)
    assert [(p.line, p.column, p.field) for p in bad.problems] == [(4, 12, "processor.version")]
    assert "no processor.yaml in this directory nor in its subdirectories" in str(results[-1][1])


def test_validate_paths_applies_the_release_rules(
    proc_dir: Path, write: Callable[[str], Path], tmp_path: Path
) -> None:
    write(GOOD.replace("  profile: debian-12-python\n", f"  image: {CATALOG_IMAGE}:9.5\n"))
    ((_, error),) = validate_paths([proc_dir], data_dir=tmp_path, release=True)
    assert isinstance(error, ManifestError)
    assert [(p.field, p.message.split(":")[0]) for p in error.problems] == [
        ("base.image", "a release needs the image pinned")
    ]

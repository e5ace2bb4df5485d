"""A tagged revision is a release: the release rules apply without anyone passing --release."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imagekit.config import load_profile
from imagekit.errors import ManifestError
from imagekit.pipeline import render_processor
from imagekit.render import source_info

MANIFEST = """schema_version: 1
processor: {name: tagged-demo, version: 1.0.0}
base: {image: registry.example.org/eo/base}
app:
  copy: [{from: conf/, to: /opt/processor/conf/}]
tests: [{name: conf, run: [cat, /opt/processor/conf/a.toml], expect_stdout: "a = 1"}]
"""


def git(directory: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(directory), *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def processor(tmp_path: Path) -> Path:
    directory = tmp_path / "tagged-demo"
    (directory / "conf").mkdir(parents=True)
    (directory / "conf" / "a.toml").write_text("a = 1\n")
    (directory / "processor.yaml").write_text(MANIFEST)
    git(directory, "init", "-q")
    git(directory, "add", ".")
    git(directory, "commit", "-q", "-m", "first")
    return directory


def test_release_tag_comes_from_ci_or_from_git(processor: Path) -> None:
    assert source_info(processor, {}).release_tag == ""
    assert source_info(processor, {"CI_COMMIT_TAG": "v9.9.9"}).release_tag == "v9.9.9"
    git(processor, "tag", "v1.0.0")
    assert source_info(processor, {}).release_tag == "v1.0.0"


def test_tagged_revision_gets_the_release_rules(processor: Path) -> None:
    profile = load_profile(env={}).profile
    with pytest.raises(ManifestError) as untagged:
        render_processor(processor, profile, processor.parent / "out")
    pinning = [p for p in untagged.value.problems if "digest" in p.message]
    assert [(p.line, p.field) for p in pinning] == [(3, "base.image")]
    assert "FROM is always pinned by digest" in pinning[0].message
    git(processor, "tag", "v1.0.0")
    with pytest.raises(ManifestError) as refused:
        render_processor(processor, profile, processor.parent / "out")
    pinning = [p for p in refused.value.problems if "digest" in p.message]
    assert [(p.line, p.field) for p in pinning] == [(3, "base.image")]
    assert "a release needs the image pinned" in pinning[0].message
    assert not (processor.parent / "out").exists(), "a refused render writes nothing"

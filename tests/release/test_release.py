"""`imagekit release` end to end on the real engine, registry and a local CVMFS tree: a full release,
the unchanged second one, another render of a pushed version refused before building, and a failing
step that leaves no channel and no tree behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagekit.config import Profile
from imagekit.manifest import scaffold
from imagekit.registry import RegistryClient

pytestmark = [pytest.mark.registry, pytest.mark.engine, pytest.mark.slow]


def _processor(tmp_path: Path, name: str) -> Path:
    directory = tmp_path / name
    scaffold(directory, name)
    manifest = directory / "processor.yaml"
    text = manifest.read_text().replace("  cvmfs: false", "  cvmfs: true")
    manifest.write_text(text)
    return directory


def _release(profile: Profile, directory: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return _cli(profile, "release", str(directory), "--reports", str(tmp_path / "scans"))


def _cli(profile: Profile, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEKIT_")}
    env.update(
        IMAGEKIT_CVMFS_ROOT=profile.cvmfs.root,
        IMAGEKIT_REGISTRY_PROJECT=profile.registry.project,
        IMAGEKIT_SCAN_VULNERABILITY_DB="when-available",
        IMAGEKIT_SCAN_TRIVY_DB_REPOSITORY="",
        NO_COLOR="1",
        COLUMNS="200",
    )
    imagekit = str(Path(sys.executable).parent / "imagekit")
    return subprocess.run(
        [imagekit, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )


@pytest.fixture
def release_profile(profile: Profile) -> Profile:
    """Base pins and scan records are the site's (data_dir), the tree and the project the test's."""
    profile.paths.data_dir = ""
    return profile


def test_release_then_unchanged_then_refused(
    release_profile: Profile, tmp_path: Path, docker_cleanup: list[str], registry_cleanup: None
) -> None:
    name = f"rel{release_profile.registry.project[-8:]}"
    docker_cleanup.extend([f"{name}:0.1.0"])
    directory = _processor(tmp_path, name)
    first = _release(release_profile, directory, tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"released {name} 0.1.0 to dev" in first.stdout
    repository = f"{release_profile.registry.project}/{name}"
    with RegistryClient.from_profile(release_profile) as client:
        assert client.manifest_digest(repository, "dev") == client.manifest_digest(repository, "0.1.0")
    channel = Path(release_profile.cvmfs.root) / release_profile.registry.url / f"{repository}:dev"
    assert (channel / "opt/processor/python" / name / "__main__.py").is_file()

    seen = json.loads(_cli(release_profile, "inspect", name, "--json").stdout)
    assert [e["name"] for e in seen["executables"]] == [name]
    assert (
        seen["executables"][0]["inputs"] == ["input_file"]
        and seen["executables"][0]["resources"]["cores"] == 1
    )
    assert (seen["version"], seen["channels"], seen["cvmfs_channels"]) == ("0.1.0", ["dev"], ["dev"])
    assert seen["scan"] == "passed, vulnerabilities not checked" and seen["sbom"]["components"] > 0

    second = _release(release_profile, directory, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "is unchanged: already pushed from this render and published, nothing done" in second.stdout

    (directory / "python" / name / "__main__.py").write_text("print('changed')\n")
    refused = _release(release_profile, directory, tmp_path)
    assert refused.returncode == 3, refused.stderr
    assert "from another render" in refused.stderr and "nothing was built" in refused.stderr
    assert "build:" not in refused.stderr.split("render:")[-1].split("\n")[0]


def test_a_failing_step_moves_nothing(
    release_profile: Profile, tmp_path: Path, docker_cleanup: list[str], registry_cleanup: None
) -> None:
    name = f"bad{release_profile.registry.project[-8:]}"
    docker_cleanup.extend([f"{name}:0.1.0"])
    directory = _processor(tmp_path, name)
    manifest = directory / "processor.yaml"
    manifest.write_text(
        manifest.read_text().replace(f'expect_stdout: "hello from {name}"', 'expect_stdout: "nope"')
    )
    failed = _release(release_profile, directory, tmp_path)
    assert failed.returncode == 1, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert "release stopped at step 'test'" in last and "no channel moved" in last
    assert str(directory / ".imagekit/release/test.log") in last
    assert "FAIL reads-config" in (directory / ".imagekit/release/test.log").read_text()
    with RegistryClient.from_profile(release_profile) as client:
        assert client.tags(f"{release_profile.registry.project}/{name}") == []
    assert not Path(release_profile.cvmfs.root).exists() or not any(
        Path(release_profile.cvmfs.root).rglob("*:dev")
    )

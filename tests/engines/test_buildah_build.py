"""Daemonless builds with buildah: reproducible from clean storage, reusing COTS layers, and smoke
tests run with the OCI runtime imagekit chose for this host's cgroup layout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagekit.config import Profile
from imagekit.engines import engine_for
from imagekit.engines.buildah import BuildahEngine
from imagekit.pipeline import build_processor, smoke_test_processor

pytestmark = [pytest.mark.engine, pytest.mark.buildah, pytest.mark.registry, pytest.mark.slow]


@pytest.fixture
def buildah_profile(site_profile: Profile, local_env: dict[str, object], require_part) -> Profile:  # type: ignore[no-untyped-def]
    if shutil.which("buildah") is None:
        require_part("buildah is not installed: apt-get install -y buildah")
    return site_profile.model_copy(
        update={"engine": site_profile.engine.model_copy(update={"name": "buildah"})}
    )


@pytest.fixture
def clean_storages(buildah_profile: Profile, tmp_path: Path) -> Iterator[list[BuildahEngine]]:
    """Two buildah engines, each on a storage of its own, discarded afterwards."""
    engines = []
    for name in ("a", "b"):
        engine = engine_for(buildah_profile, storage_root=tmp_path / f"storage-{name}")
        assert isinstance(engine, BuildahEngine)
        engines.append(engine)
    yield engines
    for engine in engines:
        engine.discard_storage()


def test_buildah_builds_are_reproducible_and_reuse_cots_layers(
    make_processor,
    buildah_profile: Profile,
    clean_storages: list[BuildahEngine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    directory = make_processor(runtime_packages=())
    first_storage, second_storage = clean_storages

    def build(engine: BuildahEngine):  # type: ignore[no-untyped-def]
        return build_processor(directory, buildah_profile, on_line=lambda _line: None, engine=engine).image

    first = build(first_storage)
    _, outcomes = smoke_test_processor(directory, buildah_profile, engine=first_storage)
    assert all(o.passed for o in outcomes), [(o.test.name, o.reason, o.stderr) for o in outcomes]
    again = build(second_storage)
    assert first.digest.startswith("sha256:")
    assert again.digest == first.digest, "two builds from clean storage must give the same digest"

    script = directory / "bin" / "demo"
    script.write_text(script.read_text() + "# a scientist's one-line fix\n")
    changed_build = build(second_storage)
    changed = [
        i for i, (a, b) in enumerate(zip(again.diff_ids, changed_build.diff_ids, strict=True)) if a != b
    ]
    assert changed, "the code change must reach the image"
    first_changed = changed_build.layers[min(changed)].created_by
    assert "/opt/processor/bin/" in first_changed, (
        f"the first layer to change must be the app's, not {first_changed}"
    )
    reused = [layer.created_by for layer in changed_build.layers[: min(changed)]]
    added = [step for step in reused if "ADD " in step and step.rstrip().endswith(" in /")]
    assert len(added) == 2, f"both COTS layers (ADD <repacked tar> /) are reused: {reused}"


def test_buildah_build_and_smoke_tests_from_the_cli(make_processor, buildah_profile, image_cleanup) -> None:  # type: ignore[no-untyped-def]
    """`imagekit --engine buildah build --test` on buildah's shared storage, then a failing `test`."""
    directory = make_processor(runtime_packages=())
    # buildah and podman share /var/lib/containers/storage; podman lists and removes its dangling images
    image_cleanup("podman").append(f"localhost/{directory.name}:1.0.0")

    def imagekit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "imagekit.cli", "--engine", "buildah", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            timeout=900,
            check=False,
        )

    built = imagekit("build", str(directory), "--test", "--quiet")
    assert built.returncode == 0, built.stdout + built.stderr
    assert "PASS version: ok" in built.stdout and "PASS cots: ok" in built.stdout

    manifest = directory / "processor.yaml"
    manifest.write_text(manifest.read_text().replace(f'"{directory.name} 1.0.0"', '"version 9"'))
    tested = imagekit("test", str(directory))
    assert tested.returncode == 1, tested.stdout + tested.stderr
    assert "PASS cots: ok" in tested.stdout and "FAIL version" in tested.stdout
    assert (
        tested.stderr.strip().splitlines()[-1]
        == f"{directory.name}:1.0.0: 1 of 2 smoke tests failed: version"
    )

"""pipeline.render_processor, the render `imagekit build` runs: validated against the site it builds for."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.catalog import BaseRef, record_base, site_repository
from imagekit.config import PathSettings, Profile, RegistrySettings, SiteSettings
from imagekit.errors import ManifestError
from imagekit.manifest.checksums import CACHE_NAME
from imagekit.pipeline import render_processor

from .render_parts import DIGEST

REGISTRY = RegistrySettings(url="registry.example.org", project="eo")


@pytest.fixture
def profile(tmp_path: Path) -> Profile:
    """A site whose registry is registry.example.org/eo, with debian-12-python pinned there."""
    data = tmp_path / "data"
    image = site_repository(REGISTRY.url, REGISTRY.project, "debian-12-python")
    record_base(data, "debian-12-python", BaseRef(image=image, digest=DIGEST))
    return Profile(registry=REGISTRY, site=SiteSettings(), paths=PathSettings(data_dir=str(data)))


def line_column(text: str, needle: str) -> tuple[int, int]:
    before = text[: text.index(needle)]
    return before.count("\n") + 1, len(before) - before.rfind("\n")


def test_a_wrong_cots_checksum_at_build_time_has_line_and_column(
    profile: Profile, copy_processor: Callable[[str], Path], tmp_path: Path
) -> None:
    directory = copy_processor("olci-l1-demo")
    with (directory / "cots" / "olci-lut-1.0.tar.gz").open("ab") as archive:
        archive.write(b"tampered")
    text = (directory / "processor.yaml").read_text(encoding="utf-8")
    expected = text.split("sha256: ", 1)[1].split("\n", 1)[0]
    with pytest.raises(ManifestError) as raised:
        render_processor(directory, profile, tmp_path / "out")
    (problem,) = raised.value.problems
    assert (problem.line, problem.column) == line_column(text, expected)
    assert problem.field == "cots[0].sha256"
    assert problem.message.startswith(f"expected {expected}, got ")
    assert not (tmp_path / "out").exists()


def test_the_hash_is_cached_in_the_data_directory(
    profile: Profile, copy_processor: Callable[[str], Path]
) -> None:
    directory = copy_processor("olci-l1-demo")
    render_processor(directory, profile, directory / "out")
    archive = str((directory / "cots" / "olci-lut-1.0.tar.gz").resolve())
    assert archive in (profile.data_dir / CACHE_NAME).read_text(encoding="utf-8")


def test_a_base_image_must_be_the_sites_copy(
    profile: Profile, copy_processor: Callable[[str], Path], tmp_path: Path
) -> None:
    directory = copy_processor("olci-l1-demo")
    manifest = directory / "processor.yaml"
    original = manifest.read_text(encoding="utf-8")
    ours = site_repository(REGISTRY.url, REGISTRY.project, "debian-12-python")
    manifest.write_text(
        original.replace("  profile: debian-12-python\n", f"  image: {ours}:12\n  digest: {DIGEST}\n"),
        encoding="utf-8",
    )
    _, _, rendered = render_processor(directory, profile, tmp_path / "ours")
    assert f"FROM {ours}:12@{DIGEST} AS site" in rendered.definition.read_text(encoding="utf-8")

    theirs = "registry.example.org/other/base/debian-12-python"
    manifest.write_text(
        original.replace("  profile: debian-12-python\n", f"  image: {theirs}\n  digest: {DIGEST}\n"),
        encoding="utf-8",
    )
    with pytest.raises(ManifestError) as raised:
        render_processor(directory, profile, tmp_path / "theirs")
    (problem,) = raised.value.problems
    assert problem.field == "base.image"
    assert f"'{theirs}' is no catalog image" in problem.message
    assert "registry.example.org/eo/base/<profile>" in problem.message

"""Fixtures of the render tests. Nothing here depends on `imagekit dev up` having run: bases are
pinned to a fixed digest, the site CA is a file made for the test, and the revision is fixed, so
rendered text is comparable.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.config import SiteSettings
from imagekit.manifest import load_manifest
from imagekit.render import RenderResult, render

from .render_parts import EXAMPLES, IMAGE_REF, SOURCE, Render, base_for


@pytest.fixture
def site(tmp_path: Path) -> SiteSettings:
    """A site with one CA file of its own and, as on a data centre's network, mirrors."""
    ca = tmp_path / "site-ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", encoding="utf-8")
    return SiteSettings(
        ca_certificates=[str(ca)],
        apt_mirror="http://mirror.example.org/debian",
        pip_index_url="https://pypi.mirror.example.org/simple",
    )


@pytest.fixture
def copy_processor(tmp_path: Path) -> Callable[[str], Path]:
    """A private copy of an example, for tests that change its files."""

    def copy(name: str) -> Path:
        target = tmp_path / "processors" / name
        shutil.copytree(EXAMPLES[name], target)
        return target

    return copy


@pytest.fixture
def render_example(tmp_path: Path, site: SiteSettings) -> Render:
    """Render an example (by name or directory) into a fresh folder under tmp_path."""
    counter = iter(range(1_000_000))

    def run(example: str | Path, target: str = "docker", **overrides: object) -> RenderResult:
        manifest = load_manifest(EXAMPLES[example] if isinstance(example, str) else example)
        arguments: dict[str, object] = {
            "base": base_for(manifest),
            "site": site,
            "source": SOURCE,
            "target": target,
            "image_ref": IMAGE_REF if target == "apptainer" else "",
        }
        arguments.update(overrides)
        return render(manifest, tmp_path / f"out-{next(counter)}", **arguments)  # type: ignore[arg-type]

    return run

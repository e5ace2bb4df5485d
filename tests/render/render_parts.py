"""What the render tests share: the example processors, a fixed base digest, site and revision."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from imagekit.catalog import BaseRef, site_repository
from imagekit.manifest import LoadedManifest
from imagekit.render import RenderResult, SourceInfo

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN = Path(__file__).resolve().parent / "golden"
DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE_REF = "127.0.0.1:5000/imagekit/processor@sha256:" + "fedcba9876543210" * 4
SOURCE = SourceInfo(
    revision="4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    short="4b825dc642cb",
    created="2024-06-01T12:00:00Z",
    source_url="https://git.example.org/eo/processors",
)
EXAMPLES = {
    "olci-l1-demo": REPO / "processors" / "olci-l1-demo",
    "sst-cdr-demo": REPO / "processors" / "sst-cdr-demo",
    "s2-cloudmask-demo": REPO / "processors" / "s2-cloudmask-demo",
    "cdr-regrid-demo": REPO / "processors" / "cdr-regrid-demo",
    "vis-pipeline-demo": REPO / "processors" / "vis-pipeline-demo",
    "el9-demo": FIXTURES / "el9-demo",
    "conda-demo": FIXTURES / "conda-demo",
}
"""Every processor the suite renders: the buildable examples and the EL9 and conda fixtures."""

Render = Callable[..., RenderResult]


def base_for(manifest: LoadedManifest) -> BaseRef:
    """The base a site would pin, in its own registry, at a fixed digest."""
    image = site_repository("127.0.0.1:5000", "imagekit", manifest.processor.base.profile)
    return BaseRef(image=image, digest=DIGEST)

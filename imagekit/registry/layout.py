"""A local engine image as an OCI layout directory: the exact manifest, config and blobs to upload.

The engine copies the image out (`Engine.export`: Docker through `skopeo copy docker-daemon:`,
podman and buildah with their own `push ... oci:`, buildah from its configured storage). Layer
compression is deterministic for a given tool version, so an unchanged layer has the same digest on
every push and the registry already has it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagekit.engines import Engine
from imagekit.errors import ToolError
from imagekit.registry.client import Manifest, sha256_digest

LAYOUT_TAG = "push"


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    path: Path


@dataclass(frozen=True)
class LocalImage:
    """What a push uploads: blobs (config first), then the manifest by digest."""

    image: str
    manifest: Manifest
    config: dict[str, Any]
    blobs: tuple[Blob, ...]

    @property
    def config_digest(self) -> str:
        return str(self.manifest.json()["config"]["digest"])

    @property
    def labels(self) -> dict[str, str]:
        found = (self.config.get("config") or {}).get("Labels") or {}
        return {str(k): str(v) for k, v in found.items()}


def export(image: str, engine: Engine, directory: Path) -> LocalImage:
    """Copy `image` from `engine` (docker, podman or buildah) into an OCI layout under `directory`
    and read it."""
    engine.export(image, f"oci:{directory}:{LAYOUT_TAG}")
    return read_layout(image, directory)


def _blob(directory: Path, descriptor: dict[str, Any]) -> Blob:
    digest = str(descriptor["digest"])
    path = directory / "blobs" / Path(*digest.split(":", 1))
    if not path.is_file() or path.stat().st_size != int(descriptor["size"]):
        raise ToolError(f"{directory}: blob {digest} is missing or has the wrong size")
    return Blob(digest, int(descriptor["size"]), path)


def read_layout(image: str, directory: Path) -> LocalImage:
    index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
    entries = index.get("manifests") or []
    if len(entries) != 1:
        raise ToolError(f"{directory}: expected one image in the OCI layout, found {len(entries)}")
    manifest_blob = _blob(directory, entries[0])
    raw = manifest_blob.path.read_bytes()
    if sha256_digest(raw) != manifest_blob.digest:
        raise ToolError(f"{directory}: manifest {manifest_blob.digest} does not match its bytes")
    body = json.loads(raw)
    media_type = str(body.get("mediaType") or entries[0].get("mediaType"))
    config = _blob(directory, body["config"])
    layers = [_blob(directory, layer) for layer in body.get("layers") or []]
    return LocalImage(
        image=image,
        manifest=Manifest(raw=raw, media_type=media_type, digest=manifest_blob.digest),
        config=json.loads(config.path.read_bytes()),
        blobs=(config, *layers),
    )

"""The image to publish, as the registry serves it: manifest bytes, config and layer chain, by digest.

Pulled with the registry step's client (`imagekit.registry.RegistryClient`). Nothing is recompressed:
the layer blobs are read as stored.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from typing import Any

from imagekit.errors import InputError, ToolError
from imagekit.registry import Manifest, RegistryClient

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Layer:
    digest: str
    media_type: str
    size: int
    diff_id: str


@dataclass(frozen=True)
class Image:
    registry: str
    repository: str
    tag: str
    manifest: Manifest
    """The single-platform manifest the layers come from."""
    index: Manifest | None
    """The index the tag named, when it named one."""
    config_raw: bytes
    config_digest: str
    layers: tuple[Layer, ...]

    @property
    def ref(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"

    @property
    def config_hex(self) -> str:
        return self.config_digest.split(":", 1)[1]

    @property
    def config(self) -> dict[str, Any]:
        data = json.loads(self.config_raw)
        return data.get("config") or {} if isinstance(data, dict) else {}

    @property
    def chain(self) -> tuple[str, ...]:
        """The uncompressed layer digests, bottom first: what an incremental publish compares."""
        return tuple(layer.diff_id for layer in self.layers)


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ToolError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ToolError(f"{what} is not a JSON object")
    return data


def _platform_manifest(source: RegistryClient, repository: str, index: Manifest) -> Manifest:
    arch = _ARCH.get(platform.machine(), platform.machine())
    for entry in _json(index.raw, f"index {index.digest}").get("manifests", []):
        wanted = entry.get("platform", {})
        if wanted.get("os") == "linux" and wanted.get("architecture") == arch:
            return source.manifest(repository, entry["digest"])
    raise InputError(f"{repository}@{index.digest} has no linux/{arch} image")


def fetch_image(source: RegistryClient, registry: str, repository: str, tag: str) -> Image:
    """The manifest the registry serves for `tag` (an index resolved to this machine's platform)."""
    served = source.manifest(repository, tag)
    index = served if served.media_type in INDEX_TYPES else None
    manifest = _platform_manifest(source, repository, served) if index else served
    body = _json(manifest.raw, f"manifest {manifest.digest}")
    config_digest = str(body.get("config", {}).get("digest", ""))
    with source.blob(repository, config_digest) as stream:
        config_raw = stream.read()
    config = _json(config_raw, f"config {config_digest}")
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    layers = body.get("layers", [])
    if len(diff_ids) != len(layers):
        raise ToolError(
            f"{repository}:{tag}: the config lists {len(diff_ids)} layers, the manifest {len(layers)}"
        )
    return Image(
        registry=registry,
        repository=repository,
        tag=tag,
        manifest=manifest,
        index=index,
        config_raw=config_raw,
        config_digest=config_digest,
        layers=tuple(
            Layer(str(entry["digest"]), str(entry.get("mediaType", "")), int(entry.get("size", 0)), str(diff))
            for entry, diff in zip(layers, diff_ids, strict=True)
        ),
    )

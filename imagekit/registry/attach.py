"""OCI artifacts attached to an image: the referrers API where the registry has it, the tag schema
fallback (an index tagged `sha256-<hex>` beside the image) where it has not.

Which one applies is decided per push by the registry's own answer: a registry that processed the
`subject` field says so with the `OCI-Subject` response header (OCI distribution spec 1.1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from imagekit.errors import ToolError
from imagekit.registry.client import OCI_INDEX, OCI_MANIFEST, Manifest, RegistryClient, sha256_digest

EMPTY_JSON = b"{}"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
Mode = Literal["referrers API", "tag schema"]
FALLBACK_TRIES = 3


@dataclass(frozen=True)
class Part:
    """One file of an artifact."""

    title: str
    media_type: str
    data: bytes


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data), **extra}


def artifact_manifest(
    artifact_type: str, parts: list[Part], annotations: Mapping[str, str], subject: Manifest | None
) -> bytes:
    """An OCI image manifest carrying an artifact (image-spec 1.1 guidance: empty config)."""
    layers = [descriptor(p.media_type, p.data, annotations={TITLE: p.title}) for p in parts]
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(EMPTY_MEDIA_TYPE, EMPTY_JSON),
        "layers": layers or [descriptor(EMPTY_MEDIA_TYPE, EMPTY_JSON)],
        "annotations": dict(sorted(annotations.items())),
    }
    if subject is not None:
        body["subject"] = descriptor(subject.media_type, subject.raw)
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def fallback_tag(digest: str) -> str:
    """The tag schema's tag for the referrers of `digest`: `sha256-<hex>`."""
    return digest.replace(":", "-")


def mode_from_headers(headers: Mapping[str, str]) -> Mode:
    """Referrers API when the registry confirms it processed `subject`; the tag schema otherwise."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return "referrers API" if lowered.get("oci-subject") else "tag schema"


def upload_parts(client: RegistryClient, repository: str, parts: list[Part]) -> None:
    for data in [EMPTY_JSON, *(p.data for p in parts)]:
        digest = sha256_digest(data)
        if not client.has_blob(repository, digest):
            client.upload_blob(repository, digest, data)


def put_artifact(
    client: RegistryClient,
    repository: str,
    artifact_type: str,
    parts: list[Part],
    annotations: Mapping[str, str],
    *,
    subject: Manifest | None = None,
    tag: str | None = None,
) -> tuple[str, Mode | None]:
    """Upload an artifact (by `tag`, or by digest); with a subject, make it findable as a referrer."""
    upload_parts(client, repository, parts)
    raw = artifact_manifest(artifact_type, parts, annotations, subject)
    digest = sha256_digest(raw)
    response = client.put_manifest_response(repository, tag or digest, raw, OCI_MANIFEST)
    if subject is None:
        return digest, None
    mode = mode_from_headers(response.headers)
    if mode == "tag schema":
        entry = descriptor(OCI_MANIFEST, raw, artifactType=artifact_type, annotations=dict(annotations))
        _add_to_fallback_index(client, repository, subject.digest, entry)
    return digest, mode


def _add_to_fallback_index(
    client: RegistryClient, repository: str, subject: str, entry: dict[str, Any]
) -> None:
    """Read-modify-write of the `sha256-<hex>` index, re-read to check no concurrent writer dropped us."""
    tag = fallback_tag(subject)
    for _ in range(FALLBACK_TRIES):
        current = client.find_manifest(repository, tag)
        manifests = list(current.json().get("manifests") or []) if current else []
        if all(m.get("digest") != entry["digest"] for m in manifests):
            manifests.append(entry)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        client.put_manifest(repository, tag, json.dumps(index, separators=(",", ":")).encode(), OCI_INDEX)
        check = client.find_manifest(repository, tag)
        if check and any(m.get("digest") == entry["digest"] for m in check.json().get("manifests") or []):
            return
    raise ToolError(f"{client.host}/{repository}:{tag}: could not add {entry['digest']} (concurrent writers)")


def referrers(
    client: RegistryClient, repository: str, digest: str, artifact_type: str
) -> list[dict[str, Any]]:
    """Descriptors of the artifacts of `artifact_type` attached to `digest`, oldest first."""
    found = client.referrers(repository, digest)
    if found is None:
        index = client.find_manifest(repository, fallback_tag(digest))
        found = list(index.json().get("manifests") or []) if index else []
    typed = [m for m in found if m.get("artifactType") == artifact_type]
    return sorted(typed, key=lambda m: str((m.get("annotations") or {}).get(CREATED, "")))

"""The render a pushed version was built from: a sha256 of its rendered build context, attached to the
image in the registry, so a release knows before building whether a version is the same or not."""

from __future__ import annotations

from imagekit.config import Profile
from imagekit.registry.attach import CREATED, Part, put_artifact, referrers
from imagekit.registry.client import RegistryClient
from imagekit.registry.names import now, repository

RENDER_ARTIFACT = "application/vnd.imagekit.render.v1+json"
RENDER_KEY = "imagekit.render.sha256"


def record_render(profile: Profile, name: str, digest: str, render_sha256: str) -> None:
    repo = repository(profile, name)
    with RegistryClient.from_profile(profile, push=True) as client:
        subject = client.find_manifest(repo, digest)
        if subject is None:
            return
        part = Part("render.json", "application/json", f'{{"sha256": "{render_sha256}"}}'.encode())
        annotations = {RENDER_KEY: render_sha256, CREATED: now()}
        put_artifact(client, repo, RENDER_ARTIFACT, [part], annotations, subject=subject)


def pushed_render(profile: Profile, name: str, version: str) -> tuple[str, str] | None:
    """(digest, render sha256, "" if none was recorded) of a pushed version; None if it is not pushed."""
    repo = repository(profile, name)
    with RegistryClient.from_profile(profile) as client:
        digest = client.manifest_digest(repo, version)
        if digest is None:
            return None
        found = referrers(client, repo, digest, RENDER_ARTIFACT)
    notes = (found[-1].get("annotations") or {}) if found else {}
    return digest, str(notes.get(RENDER_KEY, ""))

"""Release tags: a tag pipeline releases exactly the version processor.yaml says, or fails saying so."""

from __future__ import annotations

from imagekit.errors import InputError


def release_version(tag: str, *, name: str, version: str, manifest: str) -> str:
    """The version a release tag names: `v<version>`, or `<name>/v<version>` where a repository holds
    several processors; raise InputError unless it is processor.version of `manifest`."""
    prefix, _, bare = tag.rpartition("/")
    if prefix and prefix != name:
        raise InputError(f"release tag {tag} is for processor '{prefix}', not '{name}' ({manifest})")
    if not bare.startswith("v") or len(bare) == 1:
        raise InputError(
            f"release tag {tag}: expected {'' if not prefix else name + '/'}v<version>, e.g. "
            f"{'' if not prefix else name + '/'}v{version}"
        )
    if bare[1:] != version:
        expected = f"{prefix + '/' if prefix else ''}v{version}"
        raise InputError(
            f"release tag {tag} does not match processor.version {version} in {manifest}: "
            f"tag the commit {expected}, or set processor.version to {bare[1:]} in a new commit"
        )
    return version

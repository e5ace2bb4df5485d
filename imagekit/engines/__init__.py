"""Build a rendered context into a local image, and run commands in it, on a real engine.

Three engines, one surface: Docker (buildx where installed, the legacy builder where not), podman
(the same command line as Docker, through python-on-whales), and buildah (daemonless, chroot
isolation, overlay or vfs storage). The engine streams its output live and keeps the whole log in a file; on a
failure it names the failing instruction and shows the last lines of its output.
"""

from __future__ import annotations

from pathlib import Path

from imagekit.config import Profile
from imagekit.engines.base import BuiltImage, Engine, Layer, LogSink, RunResult
from imagekit.engines.buildah import BuildahEngine
from imagekit.engines.docker import DockerEngine
from imagekit.errors import ProfileError

__all__ = ["BuiltImage", "Engine", "Layer", "LogSink", "RunResult", "engine_for"]


def engine_for(profile: Profile, *, storage_root: Path | None = None) -> Engine:
    """The engine the profile names; `storage_root` gives buildah a storage of its own."""
    name = profile.engine.name
    insecure = [profile.registry.url] if profile.registry.insecure else []
    if name == "docker":
        binary = profile.engine.docker
        return DockerEngine(binary, network=profile.engine.network, insecure_registries=insecure)
    if name == "podman":
        return DockerEngine("podman", network=profile.engine.network, insecure_registries=insecure)
    if name == "buildah":
        return BuildahEngine(
            network=profile.engine.network,
            storage_driver=profile.engine.storage_driver,
            storage_root=storage_root,
            insecure_registries=insecure,
        )
    raise ProfileError(f"engine.name: unknown engine '{name}'")

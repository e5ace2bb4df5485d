"""Build a rendered context into a local image, and run commands in it, on a real engine.

Three engines, one surface: Docker (buildx where installed, the legacy builder where not), podman
(the same command line as Docker, through python-on-whales), and buildah (daemonless, chroot
isolation, overlay or vfs storage). podman and buildah run containers with the OCI runtime that
works on the host's cgroup layout (`runtime.py`). The engine streams its output live and keeps the
whole log in a file; on a failure it names the failing instruction and shows the last lines of its
output.
"""

from __future__ import annotations

import os
from pathlib import Path

from imagekit.config import Profile
from imagekit.engines.base import BuiltImage, Engine, Layer, LogSink, RunResult
from imagekit.engines.buildah import BuildahEngine, RegistryLogin
from imagekit.engines.docker import DockerEngine
from imagekit.engines.runtime import ContainerRuntime, host_runtime
from imagekit.errors import ProfileError

__all__ = [
    "BuiltImage",
    "ContainerRuntime",
    "Engine",
    "Layer",
    "LogSink",
    "RunResult",
    "engine_for",
    "host_runtime",
]


def engine_for(profile: Profile, *, storage_root: Path | None = None) -> Engine:
    """The engine the profile names; `storage_root` gives buildah a storage of its own.

    podman and buildah get the OCI runtime, cgroup manager and ulimits that work on this host's
    cgroup layout, or a clear refusal when no runtime can run containers here; buildah gets the
    registry credentials (the variables `registry.username_env`/`password_env` name) for its pulls
    and its registry cache.
    """
    settings = profile.engine
    insecure = [profile.registry.url] if profile.registry.insecure else []
    if settings.registry_cache and settings.name != "buildah":
        raise ProfileError(
            f"engine.registry_cache is buildah's (--cache-from/--cache-to); engine.name is {settings.name}: "
            "set engine.name = buildah or engine.registry_cache = false"
        )
    if settings.name == "docker":
        return DockerEngine(settings.docker, network=settings.network, insecure_registries=insecure)
    runtime = host_runtime()
    runtime.require(settings.name)
    if settings.name == "podman":
        return DockerEngine(
            settings.podman,
            name="podman",
            network=settings.network,
            insecure_registries=insecure,
            runtime=runtime,
        )
    if settings.name == "buildah":
        return BuildahEngine(
            settings.buildah,
            network=settings.network,
            storage_driver=settings.storage_driver,
            storage_root=storage_root,
            insecure_registries=insecure,
            runtime=runtime,
            cache_repository=(
                f"{profile.registry.url}/{profile.registry.project}" if settings.registry_cache else None
            ),
            registry_login=RegistryLogin(
                host=profile.registry.url,
                names=f"{profile.registry.username_env} and {profile.registry.password_env}",
                username=os.environ.get(profile.registry.username_env, ""),
                password=os.environ.get(profile.registry.password_env, ""),
            ),
        )
    raise ProfileError(f"engine.name: unknown engine '{settings.name}'")

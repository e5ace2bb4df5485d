"""The embedded local environment: `imagekit dev up` / `imagekit dev down`.

`up` brings a fresh Debian machine to a working imagekit site: Debian packages, dockerd (where the
profile's docker client and DOCKER_HOST look for it), a registry on 127.0.0.1 and the catalog's base
images. It is idempotent: a second run only checks.
"""

from __future__ import annotations

from imagekit.catalog import BaseRef
from imagekit.config import Profile
from imagekit.devenv.bases import ensure_bases
from imagekit.devenv.citools import ensure_ci_tools
from imagekit.devenv.cvmfs import ensure_cvmfs_server
from imagekit.devenv.services import (
    DevState,
    Log,
    install_packages,
    is_loopback,
    missing_binaries,
    start_dockerd,
    start_registry,
    stop,
)

# what `up` may start -> the binary its pid must still belong to when `down` stops it
SERVICES = {"dockerd": "dockerd", "registry": "docker-registry"}


def up(profile: Profile, log: Log, *, bases: bool = True) -> dict[str, BaseRef]:
    """Install, start and bootstrap what is missing; return the base images this site uses."""
    missing = missing_binaries()
    if missing:
        install_packages(missing, log)
    state = DevState(profile.data_dir)
    pids = state.load()
    started = start_dockerd(state, log, docker=profile.engine.docker)
    if started is not None:
        pids["dockerd"] = started
        state.save(pids)
    if is_loopback(profile.registry.url):
        started = start_registry(state, profile.registry.url, log)
        if started is not None:
            pids["registry"] = started
            state.save(pids)
    ensure_ci_tools(profile.data_dir, log)
    ensure_cvmfs_server(profile, log)
    return ensure_bases(profile, log) if bases else {}


def down(profile: Profile, log: Log) -> list[str]:
    """Stop only what `up` started (by recorded pid); return the names stopped."""
    state = DevState(profile.data_dir)
    pids = state.load()
    stopped = []
    for name in ("registry", "dockerd"):
        pid = pids.pop(name, None)
        if pid is not None and stop(pid, SERVICES[name], log):
            stopped.append(name)
    state.save(pids)
    return stopped

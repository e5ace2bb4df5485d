"""`imagekit doctor`: is every real part the profile needs here, and how to get what is not.

Never a silent fallback: a part the profile needs and that is missing makes doctor fail, and each
row names the exact command that gets the part.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from imagekit.config import Profile
from imagekit.devenv import citools
from imagekit.devenv import cvmfs as devenv_cvmfs
from imagekit.devenv.services import DOCKERD_ARGS, registry_reachable
from imagekit.engines.runtime import host_runtime
from imagekit.scan.trivy import INSTALL_HINT, trivy_binary


@dataclass(frozen=True)
class Check:
    part: str
    ok: bool
    detail: str
    needed: bool
    how_to_get: str = ""


def _version(command: list[str], timeout: float = 15) -> tuple[bool, str]:
    """Run a version command; (worked, first line of output or of the error)."""
    if shutil.which(command[0]) is None and not Path(command[0]).is_file():
        return False, "not installed"
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    text = (result.stdout.strip() or result.stderr.strip() or "").splitlines()
    first = text[0] if text else ""
    return result.returncode == 0, first if result.returncode == 0 else (text[-1] if text else first)


def _engine_check(profile: Profile) -> Check:
    name = profile.engine.name
    if name == "docker":
        binary = profile.engine.docker
        ok, detail = _version([binary, "version", "--format", "server {{.Server.Version}}"])
        how = (
            "start it with `imagekit dev up`, or as root: "
            f"apt-get install -y docker.io && dockerd {' '.join(DOCKERD_ARGS)} &"
        )
        if not ok and shutil.which(binary) is None:
            how = "apt-get install -y docker.io, then " + how
        return Check("engine (docker)", ok, detail if ok else f"not reachable: {detail}", True, how)
    if name == "podman":
        ok, detail = _version([profile.engine.podman, "version", "--format", "{{.Version}}"])
        return Check(
            "engine (podman)", ok, detail, True, "apt-get install -y podman, or set engine.podman_binary"
        )
    ok, detail = _version([profile.engine.buildah, "version"])
    return Check(
        "engine (buildah)", ok, detail, True, "apt-get install -y buildah, or set engine.buildah_binary"
    )


def _runtime_check(profile: Profile) -> Check:
    """The OCI runtime podman and buildah run containers with here, and why; needed for those engines."""
    runtime = host_runtime()
    return Check(
        "OCI runtime (podman, buildah)",
        runtime.usable,
        runtime.summary(),
        profile.engine.name in ("podman", "buildah"),
        runtime.how_to_fix,
    )


def run_checks(profile: Profile) -> list[Check]:
    checks = [_engine_check(profile), _runtime_check(profile)]
    docker = profile.engine.docker
    ok, detail = _version([docker, "buildx", "version"])
    checks.append(
        Check(
            "buildx",
            ok,
            detail if ok else "absent: the legacy builder is used",
            False,
            "apt-get install -y docker-buildx (Debian 13 and later; Debian 12 has no buildx package)",
        )
    )
    for tool, binary, args in (
        ("buildah", profile.engine.buildah, ["version"]),
        ("podman", profile.engine.podman, ["--version"]),
    ):
        if profile.engine.name != tool:
            ok, detail = _version([binary, *args])
            checks.append(Check(tool, ok, detail, False, f"apt-get install -y {tool}"))
    scheme = "http" if profile.registry.insecure else "https"
    reachable = registry_reachable(profile.registry.url, insecure=profile.registry.insecure)
    checks.append(
        Check(
            f"registry ({profile.registry.kind})",
            reachable,
            f"{scheme}://{profile.registry.url}/v2/ " + ("answers" if reachable else "does not answer"),
            True,
            "start the local one with `imagekit dev up`, or set [registry] url in the profile",
        )
    )
    ok, detail = _version([trivy_binary(), "--version"])
    checks.append(
        Check(
            "trivy",
            ok,
            detail,
            True,
            INSTALL_HINT,
        )
    )
    for tool, package in (("skopeo", "skopeo"), ("umoci", "umoci"), ("mmdebstrap", "mmdebstrap")):
        ok, detail = _version([tool, "--version"])
        checks.append(Check(tool, ok, detail, False, f"apt-get install -y {package}"))
    checks.extend(_ci_tool_checks(profile))
    if profile.cvmfs.backend == "cvmfs_server":
        ok, detail, how = devenv_cvmfs.status(profile)
        checks.append(Check("cvmfs_server", ok, detail, True, how))
    return checks


def _ci_tool_checks(profile: Profile) -> list[Check]:
    """Node >= 22 and the pinned gitlab-ci-local: what runs generated pipelines locally."""
    how = citools.how_to_get(profile.data_dir)
    node = citools.node_binary()
    node_row = Check(
        f"node (>= {citools.NODE_MINIMUM})",
        node is not None,
        f"{node} (v{citools.node_major(node)})" if node else "none new enough here",
        False,
        how,
    )
    ok, detail = _version([str(citools.wrapper(profile.data_dir)), "--version"])
    return [
        node_row,
        Check("gitlab-ci-local", ok, f"{citools.wrapper(profile.data_dir)} {detail}", False, how),
    ]

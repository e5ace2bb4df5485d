"""The local services of the embedded environment: Debian packages, dockerd and a registry.

Everything started here is recorded by pid in `<data_dir>/dev/state.json`, so `down` stops only
what `up` started and never a daemon an operator runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from imagekit.errors import MissingPartError, ToolError

Log = Callable[[str], None]

# binary -> Debian package that ships it
DEBIAN_PACKAGES = {
    "dockerd": "docker.io",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "buildah": "buildah",
    "runc": "runc",
    "mmdebstrap": "mmdebstrap",
}
DOCKERD_ARGS = ["--iptables=false", "--ip6tables=false", "--bridge=none"]


class DevState:
    """Pids of what `imagekit dev up` started, kept in the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "dev"
        self.file = self.dir / "state.json"

    def load(self) -> dict[str, int]:
        if not self.file.is_file():
            return {}
        return {k: int(v) for k, v in json.loads(self.file.read_text(encoding="utf-8")).items()}

    def save(self, pids: dict[str, int]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(pids, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(self.file)


def missing_binaries() -> list[str]:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
    return [binary for binary in DEBIAN_PACKAGES if shutil.which(binary, path=search) is None]


def install_packages(binaries: list[str], log: Log) -> None:
    """apt-get install the Debian packages behind the missing binaries (needs root)."""
    packages = sorted({DEBIAN_PACKAGES[b] for b in binaries})
    command = f"apt-get update && apt-get install -y --no-install-recommends {' '.join(packages)}"
    if os.geteuid() != 0:
        raise MissingPartError(", ".join(binaries), f"as root, run: {command}")
    log(f"installing Debian packages: {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *packages]):
        result = subprocess.run(step, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-5:])
            raise ToolError(f"{' '.join(step)} failed (exit {result.returncode}):\n{tail}")


def engine_reachable(docker: str) -> bool:
    """Whether the daemon answers the configured client, wherever DOCKER_HOST (or its context) points."""
    try:
        probe = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and bool(probe.stdout.strip())


def dockerd_host_args(env: Mapping[str, str]) -> list[str]:
    """Where a dockerd we start must listen: DOCKER_HOST's unix socket, or Docker's default one."""
    host = env.get("DOCKER_HOST", "")
    if not host:
        return []
    if host.startswith("unix://"):
        return ["--host", host]
    raise ToolError(
        f"the Docker engine at DOCKER_HOST={host} does not answer; imagekit dev starts dockerd only on "
        "a local unix socket (unset DOCKER_HOST, or point it at unix:///path/to/docker.sock)"
    )


def registry_reachable(url: str, *, insecure: bool = True) -> bool:
    scheme = "http" if insecure else "https"
    try:
        response = httpx.get(f"{scheme}://{url}/v2/", timeout=3)
    except httpx.HTTPError:
        return False
    return response.status_code in (200, 401)


def is_loopback(url: str) -> bool:
    host = urlsplit(f"//{url}").hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _spawn(command: list[str], log_file: Path) -> int:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return process.pid


def _wait_for(check: Callable[[], bool], what: str, log_file: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-5:]) if log_file.exists() else ""
    raise ToolError(f"{what} did not come up within {seconds:.0f} s; see {log_file}:\n{tail}")


def start_dockerd(state: DevState, log: Log, *, docker: str) -> int | None:
    """Start dockerd unless the engine answers the `docker` client; return the pid started, if any."""
    if shutil.which(docker) is None:
        raise MissingPartError(
            f"docker client {docker}", "apt-get install -y docker.io, or set engine.docker_binary"
        )
    if engine_reachable(docker):
        return None
    args = [*DOCKERD_ARGS, *dockerd_host_args(os.environ)]
    if os.geteuid() != 0:
        raise MissingPartError("Docker engine", "as root, run: dockerd " + " ".join(args) + " &")
    log_file = state.dir / "dockerd.log"
    log("starting dockerd " + " ".join(args))
    pid = _spawn(["dockerd", *args], log_file)
    _wait_for(lambda: engine_reachable(docker), "dockerd", log_file)
    return pid


def registry_config(storage: Path, address: str) -> str:
    """A config of our own: Debian's default points its auth at a directory and breaks."""
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {storage}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n"
    )


def start_registry(state: DevState, url: str, log: Log) -> int | None:
    """Start Debian's docker-registry on the loopback address of `url` unless one answers."""
    if registry_reachable(url):
        return None
    if not is_loopback(url):
        raise ToolError(f"registry {url} is unreachable (imagekit dev starts registries on 127.0.0.1 only)")
    registry_dir = state.dir / "registry"
    config = registry_dir / "config.yml"
    registry_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(registry_config(registry_dir / "storage", url), encoding="utf-8")
    log_file = registry_dir / "registry.log"
    if (registry_dir / "storage").is_dir():
        compact_registry(config, log_file, log)
    log(f"starting docker-registry on {url}")
    pid = _spawn(["docker-registry", "serve", str(config)], log_file)
    _wait_for(lambda: registry_reachable(url), "docker-registry", log_file)
    return pid


def compact_registry(config: Path, log_file: Path, log: Log) -> None:
    """Free the blobs no manifest references any more (deleted tags, deleted test projects) while the
    registry is stopped, the only time distribution's garbage collector may run. Untagged manifests
    are kept: something may still be pulled by digest."""
    log("compacting the local registry's storage (blobs no manifest references)")
    with log_file.open("ab") as sink:
        done = subprocess.run(
            ["docker-registry", "garbage-collect", str(config)], stdout=sink, stderr=sink, check=False
        )
    if done.returncode != 0:
        raise ToolError(f"docker-registry garbage-collect failed (exit {done.returncode}); see {log_file}")


def stop(pid: int, expected_binary: str, log: Log) -> bool:
    """Stop a process we started, after checking the pid still belongs to that binary."""
    if not _alive(pid) or expected_binary not in _command_of(pid):
        return False
    log(f"stopping {expected_binary} (pid {pid})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True

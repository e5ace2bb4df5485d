"""Helpers of the registry tests: the CLI as a subprocess, registries of a test's own, skopeo checks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagekit.cli", *args], env=env, capture_output=True, text=True, check=False
    )


def push_cut_by_outage(env: dict[str, str], image: str, registry: OwnRegistry) -> tuple[int, str]:
    """`imagekit push IMAGE` with the registry stopped once the upload has begun; (exit code, stderr)."""
    pushing = subprocess.Popen(
        [sys.executable, "-m", "imagekit.cli", "push", image],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert pushing.stderr is not None
    lines = []
    for line in pushing.stderr:
        lines.append(line)
        if "uploading" in line:
            time.sleep(0.2)
            registry.stop()
            break
    _, rest = pushing.communicate(timeout=120)
    return pushing.returncode, "".join(lines) + rest


class OwnRegistry:
    """A docker-registry of the test's own on a free loopback port; stop() and start() at will."""

    def __init__(self, root: Path, *, htpasswd: Path | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        auth = f"auth:\n  htpasswd:\n    realm: imagekit-test\n    path: {htpasswd}\n" if htpasswd else ""
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "config.yml"
        self.config.write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.url}\n{auth}"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.root / "registry.log").open("ab")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(self.config)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://{self.url}/v2/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry on {self.url} did not come up")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def skopeo_digest(reference: str) -> str:
    """The digest of the manifest bytes skopeo fetches, computed here: an independent check."""
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True,
        check=True,
    ).stdout
    done = subprocess.run(["sha256sum"], input=raw, capture_output=True, check=True)
    return "sha256:" + done.stdout.split()[0].decode()

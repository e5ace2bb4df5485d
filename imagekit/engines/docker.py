"""Docker (and podman, which speaks the same command line) through python-on-whales.

Every failure of the client ends as a ToolError naming the command, never as an internal error.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from python_on_whales import DockerClient
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.exceptions import DockerException
from python_on_whales.utils import stream_stdout_and_stderr

from imagekit.config import Profile
from imagekit.engines.base import (
    BuildTranscript,
    BuiltImage,
    Layer,
    LogSink,
    RunResult,
    export_failed,
    full_id,
    not_there,
    pulls_over_plain_http,
)
from imagekit.engines.runtime import ContainerRuntime
from imagekit.errors import MissingPartError, ToolError

_NO_DAEMON = "Cannot connect to the Docker daemon"
_INSTALL = {
    "docker": "apt-get install -y docker.io (or set engine.docker_binary)",
    "podman": "apt-get install -y podman (or set engine.podman_binary)",
}


def docker_client(profile: Profile) -> DockerClient:
    """A client for the profile's docker binary (the first `docker` on PATH by default)."""
    return DockerClient(client_call=[profile.engine.docker])


class DockerEngine:
    def __init__(
        self,
        binary: str,
        *,
        network: str,
        insecure_registries: list[str],
        name: str = "docker",
        runtime: ContainerRuntime | None = None,
    ) -> None:
        self.binary = binary
        self.insecure_registries = insecure_registries
        self.name = name
        self.network = network
        self.runtime = runtime
        # podman's global flags go on every call, so builds, runs and inspections see one runtime
        prefix = ["--runtime", runtime.runtime, "--cgroup-manager", runtime.cgroup_manager] if runtime else []
        self.command = [binary, *prefix]
        self.client = DockerClient(client_call=self.command)

    @cached_property
    def has_buildx(self) -> bool:
        """buildx where installed; Debian 12's docker.io has none, so the legacy builder must work."""
        if self.name != "docker":
            return False
        probe = subprocess.run([self.binary, "buildx", "version"], capture_output=True, check=False)
        return probe.returncode == 0

    def _build_command(self, context: Path, tags: list[str]) -> tuple[list[str], dict[str, str]]:
        command = list(self.command)
        env: dict[str, str] = {}
        if self.has_buildx:
            command += ["buildx", "build", "--load", "--progress", "plain"]
        else:
            command += ["build", "--force-rm"]
            if self.name == "docker":
                env["DOCKER_BUILDKIT"] = "0"
            else:
                command += ["--layers"]
                if pulls_over_plain_http(context / "Dockerfile", self.insecure_registries):
                    command += ["--tls-verify=false"]
        command += ["--network", self.network, "--file", str(context / "Dockerfile")]
        for tag in tags:
            command += ["--tag", tag]
        return [*command, str(context)], env

    def build(
        self,
        context: Path,
        tags: list[str],
        *,
        log_file: Path,
        on_line: LogSink,
        source_date_epoch: int | None,
        no_cache: bool = False,
    ) -> BuiltImage:
        command, env = self._build_command(context, tags)
        if no_cache:
            command.insert(-1, "--no-cache")
        if source_date_epoch is not None:
            env["SOURCE_DATE_EPOCH"] = str(source_date_epoch)
        transcript = BuildTranscript(log_file, on_line)
        try:
            transcript.follow(
                line.decode("utf-8", "replace") for _, line in stream_stdout_and_stderr(command, env)
            )
        except DockerException as exc:
            if not transcript.instruction and any(_NO_DAEMON in line for line in transcript.tail):
                host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
                raise MissingPartError(
                    f"the Docker daemon at {host}",
                    "start dockerd (`imagekit dev up` starts one) or point DOCKER_HOST at a running engine",
                ) from exc
            raise transcript.failure(self.name, f"exit {exc.return_code}") from exc
        except FileNotFoundError as exc:
            raise MissingPartError(self.binary, _INSTALL[self.name]) from exc
        return self.describe(tags[0], tags, log_file)

    def describe(self, image: str, tags: list[str], log_file: Path) -> BuiltImage:
        with self._failures(f"image inspect {image}"):
            inspected = self.client.image.inspect(image)
        return BuiltImage(
            engine=self.name,
            id=inspected.id,
            tags=tags,
            diff_ids=list(inspected.root_fs.layers or []),
            layers=self._history(image),
            log_file=log_file,
        )

    @contextmanager
    def _failures(self, action: str) -> Iterator[None]:
        """python-on-whales' exceptions as one clear ToolError: the command and the engine's words."""
        try:
            yield
        except ClientNotFoundError as exc:
            raise MissingPartError(self.binary, _INSTALL[self.name]) from exc
        except DockerException as exc:
            said = (exc.stderr or exc.stdout or "").strip().splitlines()
            reason = said[-1] if said else f"exit {exc.return_code}"
            raise ToolError(f"{self.binary} {action} failed: {reason}") from exc

    def _history(self, image: str) -> list[Layer]:
        """Instructions that wrote bytes, oldest first (python-on-whales has no history yet).

        Docker prints raw byte counts with `--human=false`; podman ignores that flag, but its
        JSON carries them.
        """
        fmt = "json" if self.name == "podman" else "{{json .}}"
        listed = self._call(["image", "history", "--no-trunc", "--human=false", "--format", fmt, image])
        if listed.returncode != 0:
            raise ToolError(f"{self.binary} image history {image} failed: {listed.stderr.strip()}")
        if self.name == "podman":
            entries = [
                (int(e.get("size", 0)), str(e.get("CreatedBy", ""))) for e in json.loads(listed.stdout)
            ]
        else:
            rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
            entries = [(int(r["Size"]) if str(r["Size"]).isdigit() else 0, str(r["CreatedBy"])) for r in rows]
        return [
            Layer(diff_id="", size=size, created_by=created_by.strip())
            for size, created_by in reversed(entries)
            if size > 0
        ]

    def run(self, image: str, command: list[str], *, user: str, timeout_s: int) -> RunResult:
        name = f"imagekit-smoke-{uuid.uuid4().hex[:12]}"
        limits = self.runtime.ulimit_flags() if self.runtime else []
        argv = [
            *self.command, "run", "--rm", "--name", name, "--network", "none", "--user", user, *limits,
            "--entrypoint", command[0], image, *command[1:],
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        except FileNotFoundError as exc:
            raise MissingPartError(self.binary, _INSTALL[self.name]) from exc
        except subprocess.TimeoutExpired as expired:
            self._call(["rm", "--force", name])
            return RunResult(-1, _text(expired.stdout), _text(expired.stderr), timed_out=True)
        return RunResult(done.returncode, done.stdout, done.stderr)

    def exists(self, image: str) -> bool:
        with self._failures(f"image inspect {image}"):
            return bool(self.client.image.exists(image))

    def image_id(self, image: str) -> str | None:
        done = self._call(["image", "inspect", "--format", "{{.Id}}", image])
        if done.returncode == 0:
            return full_id(done.stdout)
        if not_there(done.stderr):
            return None
        raise ToolError(f"{self.binary} image inspect {image} failed: {done.stderr.strip() or 'no output'}")

    def export(self, image: str, destination: str) -> None:
        """podman pushes to the transport itself; Docker saves its archive, and skopeo reads the
        daemon for any other transport."""
        transport, _, path = destination.partition(":")
        if self.name == "podman":
            what, command = [self.binary, "push"], [*self.command, "push", "--quiet", image, destination]
        elif transport == "docker-archive":
            what, command = [self.binary, "save"], [self.binary, "save", "--output", path, image]
        else:
            what = ["skopeo", "copy"]
            command = ["skopeo", "copy", "--quiet", f"docker-daemon:{image}", destination]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            if command[0] == "skopeo":
                raise MissingPartError("skopeo", "apt-get install -y skopeo (imagekit dev up does)") from exc
            raise MissingPartError(self.binary, _INSTALL[self.name]) from exc
        if done.returncode != 0:
            raise export_failed(self.name, image, what, done.stderr)

    def remove(self, images: list[str]) -> None:
        present = [image for image in images if self.exists(image)]
        if present:
            with self._failures(f"image rm {' '.join(present)}"):
                self.client.image.remove(present, force=True, prune=True)

    def _call(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([*self.command, *args], capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            raise MissingPartError(self.binary, _INSTALL[self.name]) from exc


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""

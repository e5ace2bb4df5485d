"""Docker (and podman, which speaks the same command line) through python-on-whales."""

from __future__ import annotations

import json
import subprocess
import uuid
from functools import cached_property
from pathlib import Path

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException
from python_on_whales.utils import stream_stdout_and_stderr

from imagekit.config import Profile
from imagekit.engines.base import (
    BuildTranscript,
    BuiltImage,
    Layer,
    LogSink,
    RunResult,
    pulls_over_plain_http,
)
from imagekit.errors import ToolError


def docker_client(profile: Profile) -> DockerClient:
    """A client for the profile's docker binary (the first `docker` on PATH by default)."""
    return DockerClient(client_call=[profile.engine.docker])


class DockerEngine:
    def __init__(self, binary: str, *, network: str, insecure_registries: list[str]) -> None:
        self.binary = binary
        self.insecure_registries = insecure_registries
        self.name = "podman" if Path(binary).name == "podman" else "docker"
        self.network = network
        self.client = DockerClient(client_call=[binary])

    @cached_property
    def has_buildx(self) -> bool:
        """buildx where installed; Debian 12's docker.io has none, so the legacy builder must work."""
        if self.name != "docker":
            return False
        probe = subprocess.run([self.binary, "buildx", "version"], capture_output=True, check=False)
        return probe.returncode == 0

    def _build_command(self, context: Path, tags: list[str]) -> tuple[list[str], dict[str, str]]:
        command = [*map(str, self.client.client_config.docker_cmd)]
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
            raise transcript.failure(self.name, f"exit {exc.return_code}") from exc
        except FileNotFoundError as exc:
            raise ToolError(f"{self.binary} is not installed: run `imagekit doctor`") from exc
        return self.describe(tags[0], tags, log_file)

    def describe(self, image: str, tags: list[str], log_file: Path) -> BuiltImage:
        inspected = self.client.image.inspect(image)
        return BuiltImage(
            engine=self.name,
            id=inspected.id,
            tags=tags,
            diff_ids=list(inspected.root_fs.layers or []),
            layers=self._history(image),
            log_file=log_file,
        )

    def _history(self, image: str) -> list[Layer]:
        """Instructions that wrote bytes, oldest first (python-on-whales has no history yet).

        Docker prints raw byte counts with `--human=false`; podman ignores that flag, but its
        JSON carries them.
        """
        fmt = "json" if self.name == "podman" else "{{json .}}"
        listed = subprocess.run(
            [self.binary, "image", "history", "--no-trunc", "--human=false", "--format", fmt, image],
            capture_output=True,
            text=True,
            check=False,
        )
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
        argv = [
            *map(str, self.client.client_config.docker_cmd),
            "run", "--rm", "--name", name, "--network", "none", "--user", user,
            "--entrypoint", command[0], image, *command[1:],
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as expired:
            subprocess.run([self.binary, "rm", "--force", name], capture_output=True, check=False)
            return RunResult(-1, _text(expired.stdout), _text(expired.stderr), timed_out=True)
        return RunResult(done.returncode, done.stdout, done.stderr)

    def exists(self, image: str) -> bool:
        return bool(self.client.image.exists(image))

    def remove(self, images: list[str]) -> None:
        present = [image for image in images if self.client.image.exists(image)]
        if present:
            self.client.image.remove(present, force=True, prune=True)


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""

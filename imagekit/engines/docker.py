"""Docker (and podman, which speaks the same command line) through python-on-whales.

Every failure of the client ends as a ToolError naming the command, never as an internal error.
Docker's legacy builder re-sends the whole context on every build: when the runtime stage's
foundation (render's `foundation.json`: up to its last COTS layer) is what the last build of this
processor made, and that image is still there, the runtime stage starts FROM that image and the
context goes without the COTS archives. It is the same build, cache for cache, without the upload.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
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
    STEP_IMAGE,
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
from imagekit.render.foundation import FOUNDATION_FILE, RUNTIME_STAGE, Foundation, read_foundation

_NO_DAEMON = "Cannot connect to the Docker daemon"
FOUNDATION_STATE = "foundation-image.json"
"""Beside build.log: the foundation key of the last full build and its step's image (a cache)."""
SLIM_CONTEXT = "slim-context"
_STEP = re.compile(r"^Step (\d+)/(\d+) : ")
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
        state = log_file.with_name(FOUNDATION_STATE)
        foundation = read_foundation(context)
        image, why = self._foundation_image(foundation, state, no_cache)
        build_dir = context
        if image and foundation:
            build_dir = _slim_context(context, foundation, image, log_file.with_name(SLIM_CONTEXT))
            note = (
                f"imagekit: slim context: the {RUNTIME_STAGE} stage starts from its foundation image "
                f"{image} (step {foundation.step}), the context goes without {', '.join(foundation.files)}"
            )
        else:
            note = f"imagekit: full build context ({why})"
        command, env = self._build_command(build_dir, tags)
        if no_cache:
            command.insert(-1, "--no-cache")
        if source_date_epoch is not None:
            env["SOURCE_DATE_EPOCH"] = str(source_date_epoch)
        transcript = BuildTranscript(log_file, on_line)
        try:
            transcript.follow(
                itertools.chain(
                    [note],
                    (line.decode("utf-8", "replace") for _, line in stream_stdout_and_stderr(command, env)),
                )
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
        finally:
            if build_dir != context:
                shutil.rmtree(build_dir, ignore_errors=True)
        if foundation and not image and self.name == "docker" and not self.has_buildx:
            self._record(foundation, state, log_file)
        return self.describe(tags[0], tags, log_file)

    def _foundation_image(
        self, foundation: Foundation | None, state: Path, no_cache: bool
    ) -> tuple[str, str]:
        """(the foundation's image id, "") when this build can start from it, else ("", why not)."""
        if self.name != "docker":
            return "", f"{self.name} reads the context in place"
        if self.has_buildx:
            return "", "buildx sends only what changed"
        if no_cache:
            return "", "--no-cache"
        if foundation is None:
            return "", "no COTS archive to leave out of the context"
        try:
            recorded = json.loads(state.read_text(encoding="utf-8"))
            key, image = str(recorded["key"]), str(recorded["image"])
        except (OSError, ValueError, KeyError, TypeError):
            return "", "no foundation image recorded for this processor on this engine"
        if key != foundation.key:
            return "", "base, site stage, system packages or COTS changed since the last build"
        if self.image_id(image) != image:
            return "", f"the foundation image {image} is no longer on the engine"
        return image, ""

    def _record(self, foundation: Foundation, state: Path, log_file: Path) -> None:
        """Remember the image of the foundation's last step (from the full build's ` ---> <id>` lines)
        for the next build; forget any older one when the output does not name it."""
        step, short = (0, 0), ""
        for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines():
            if match := _STEP.match(line):
                step = (int(match[1]), int(match[2]))
            elif (match := STEP_IMAGE.match(line)) and step == (foundation.step, foundation.steps):
                short = match[1]
        image = self.image_id(short) if short else None
        if image is None:
            state.unlink(missing_ok=True)
            return
        written = state.with_name(state.name + ".tmp")
        written.write_text(json.dumps({"key": foundation.key, "image": image}) + "\n", encoding="utf-8")
        written.replace(state)

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


def _slim_context(context: Path, foundation: Foundation, image: str, target: Path) -> Path:
    """The context without the files only the foundation reads (hard links, so every file keeps its
    bytes, mode and times, and the cache keys and layers of the steps after it are the same), and
    the Dockerfile whose runtime stage starts FROM the foundation's image."""
    shutil.rmtree(target, ignore_errors=True)
    leave = {context / name for name in (*foundation.files, "Dockerfile", FOUNDATION_FILE)}
    shutil.copytree(
        context,
        target,
        symlinks=True,
        copy_function=_link,
        ignore=lambda folder, names: [name for name in names if Path(folder) / name in leave],
    )
    lines = (context / "Dockerfile").read_text(encoding="utf-8").splitlines(keepends=True)
    start = f"FROM {image} AS {RUNTIME_STAGE}\n"
    (target / "Dockerfile").write_text(
        "".join([*lines[: foundation.first_line], start, *lines[foundation.end_line :]]), encoding="utf-8"
    )
    shutil.copystat(context, target)
    return target


def _link(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""

"""What every engine offers, and the build-output bookkeeping they share."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from imagekit.errors import BuildError, InputError, ToolError

STEP_IMAGE = re.compile(r"^\s*-{2,3}> ([0-9a-f]{11,12})\b", re.MULTILINE)
"""The line ending a build step with the short id of its image: ` ---> 1a2b3c4d5e6f` (docker's
legacy builder), `--> 1a2b3c4d5e6` (podman)."""


def step_images(output: str) -> set[str]:
    """The short ids of the step images a build's output names."""
    return set(STEP_IMAGE.findall(output))


def named_by(image_ids: Iterable[str], short_ids: set[str]) -> list[str]:
    """The full image ids among `image_ids` that one of `short_ids` (from build output) names."""
    return [
        i for i in image_ids if {i.removeprefix("sha256:")[:12], i.removeprefix("sha256:")[:11]} & short_ids
    ]


LogSink = Callable[[str], None]

# "Step 3/9 : RUN make" (docker legacy), "STEP 3/9: RUN make" (buildah), "[2/3] STEP 3/9: RUN make"
# (podman, multi-stage), "#7 [builder 2/4] RUN make" (buildx)
_INSTRUCTION = re.compile(
    r"^(?:Step \d+/\d+ : |(?:\[\d+/\d+\] )?STEP \d+/\d+: |#\d+ \[[^\]]*\] )(?P<instruction>.+)$"
)
TAIL_LINES = 20
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def instruction_of(line: str) -> str | None:
    """The instruction a build-output line starts, if it starts one (for progress displays)."""
    match = _INSTRUCTION.match(line)
    return match.group("instruction") if match else None


def pulls_over_plain_http(dockerfile: Path, insecure_registries: list[str]) -> bool:
    """Whether a FROM names a registry the profile marks insecure (plain HTTP on loopback).

    Docker trusts 127.0.0.0/8 over HTTP by itself; podman and buildah must be told.
    """
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if line.startswith("FROM ") and any(line[5:].startswith(r + "/") for r in insecure_registries):
            return True
    return False


_NOT_THERE = ("no such image", "image not known", "reference does not exist")


def not_there(stderr: str) -> bool:
    """Whether an engine's error says it has no such image (docker, podman and buildah words)."""
    return any(words in stderr.lower() for words in _NOT_THERE)


def full_id(printed: str) -> str:
    """An image id as `sha256:<hex>`: podman and buildah print the bare hex."""
    printed = printed.strip()
    return printed if printed.startswith("sha256:") else f"sha256:{printed}"


def export_failed(engine: str, image: str, command: list[str], stderr: str) -> InputError | ToolError:
    """An absent image is bad input (build it first); anything else the engine's own last words."""
    if not_there(stderr):
        return InputError(f"{image} is not an image on {engine}: build it first")
    said = stderr.strip().splitlines()[-1:] or ["no output"]
    return ToolError(f"{' '.join(command)} {image} failed: {said[0]}")


@dataclass(frozen=True)
class Layer:
    diff_id: str
    size: int
    created_by: str


@dataclass(frozen=True)
class BuiltImage:
    engine: str
    id: str
    tags: list[str]
    diff_ids: list[str]
    layers: list[Layer]
    log_file: Path
    digest: str = ""
    """Manifest digest where the engine computes one locally (buildah); the registry's otherwise."""


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False


class Engine(Protocol):
    name: str

    def build(
        self,
        context: Path,
        tags: list[str],
        *,
        log_file: Path,
        on_line: LogSink,
        source_date_epoch: int | None,
        no_cache: bool = False,
    ) -> BuiltImage: ...

    def run(self, image: str, command: list[str], *, user: str, timeout_s: int) -> RunResult: ...

    def exists(self, image: str) -> bool: ...

    def image_id(self, image: str) -> str | None:
        """`sha256:<hex>`, the config digest scan records are bound to; None if the engine lacks it."""
        ...

    def export(self, image: str, destination: str) -> None:
        """Copy `image` out to a containers-transport `destination` (`docker-archive:PATH`,
        `oci:DIR:TAG`), so daemonless tools (Trivy, the push) read it from any engine."""
        ...

    def remove(self, images: list[str]) -> None: ...


@dataclass
class BuildTranscript:
    """Follows a build's output: writes the log, tracks the current instruction, keeps the tail."""

    log_file: Path
    on_line: LogSink
    instruction: str = ""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    def follow(self, lines: Iterable[str]) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("w", encoding="utf-8") as log:
            for raw in lines:
                line = _ANSI.sub("", raw.rstrip("\n"))
                log.write(line + "\n")
                log.flush()
                instruction = instruction_of(line)
                if instruction:
                    self.instruction = instruction
                    self.tail.clear()
                else:
                    self.tail.append(line)
                self.on_line(line)

    def failure(self, engine: str, reason: str) -> BuildError:
        tail = "\n".join(f"  | {line}" for line in self.tail)
        failing = self.instruction or "(before the first instruction)"
        return BuildError(
            f"build failed on {engine} at: {failing}: {reason} (full log: {self.log_file})",
            hint=f"last lines of its output:\n{tail}" if tail else None,
        )

"""The runtime stage's foundation: its instructions up to and including the last COTS layer.

Docker's legacy builder sends the whole build context on every build, COTS archives included, even
when only the code changed. Render knows which instructions write the COTS and which context files
only they read, so it records that split (`foundation.json`, beside the Dockerfile and outside the
context the .dockerignore lets through) with a key over everything the foundation's image depends
on. The docker engine then builds a code change from that image with a context without those files.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from imagekit.manifest.rules import FOUNDATION_FILE
from imagekit.render.context import Cots, RenderContext

__all__ = ["FOUNDATION_FILE", "Foundation", "foundation_of", "instructions", "read_foundation"]
RUNTIME_STAGE = "runtime"
"""The stage that ships (the template's last stage)."""
_FROM = re.compile(r"^FROM\s+(?P<image>\S+)(?:\s+AS\s+(?P<stage>\S+))?\s*$", re.IGNORECASE)
_COPY_FROM = re.compile(r"--from=(?P<stage>\S+)")


class Foundation(BaseModel):
    """Where the runtime stage's foundation is in the Dockerfile, and what its image depends on."""

    model_config = ConfigDict(frozen=True)
    key: str
    """sha256 over the instructions the foundation depends on and the identities of the files they read."""
    first_line: int
    """0-based line of the runtime stage's FROM."""
    end_line: int
    """0-based line after the foundation's last instruction."""
    step: int
    """The legacy builder's step number (`Step N/M`) of the foundation's last instruction."""
    steps: int
    """M, the number of instructions of the whole Dockerfile."""
    files: list[str]
    """Context files only the foundation reads: the context of a build from its image goes without them."""


@dataclass(frozen=True)
class Instruction:
    step: int
    first_line: int
    end_line: int
    text: str
    """The instruction as the builder reads it, continuation lines joined."""


def instructions(dockerfile: str) -> list[Instruction]:
    """The Dockerfile's instructions as the legacy builder counts its steps: comment and blank
    lines skipped, also inside a continued instruction, `\\` continuations joined."""
    found: list[Instruction] = []
    lines = dockerfile.splitlines()
    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        first, parts = index, list[str]()
        while True:
            line = lines[index].strip()
            index += 1
            if line.startswith("#") or (not line and parts):
                if index >= len(lines):
                    break
                continue
            if line.endswith("\\") and index < len(lines):
                parts.append(line[:-1].strip())
                continue
            parts.append(line)
            break
        found.append(Instruction(len(found) + 1, first, index, " ".join(p for p in parts if p)))
    return found


def _stage_of(instruction: Instruction) -> tuple[str, str] | None:
    """(image, stage name) of a FROM."""
    match = _FROM.match(instruction.text)
    return (match["image"], match["stage"] or "") if match else None


def _cots_written(instruction: Instruction, context: RenderContext) -> Cots | None:
    """The COTS a runtime instruction writes: the ADD of a local one's repacked tar, or the COPY
    from a remote one's stage."""
    words = instruction.text.split()
    for item in context.cots:
        if item.remote and words[0] == "COPY" and f"--from={item.stage}" in words:
            return item
        if not item.remote and words[:3] == ["ADD", item.source, "/"]:
            return item
    return None


def _uses(instruction: Instruction) -> list[str]:
    """The images or stages an instruction reads: a FROM's, a COPY --from's."""
    stage = _stage_of(instruction)
    if stage is not None:
        return [stage[0]]
    return _COPY_FROM.findall(instruction.text) if instruction.text.startswith("COPY ") else []


def foundation_of(dockerfile: str, context: RenderContext, identities: dict[str, str]) -> Foundation | None:
    """The foundation of the rendered Dockerfile, or None when no local COTS would stay out of the
    context. `identities` names each context file the site stage and the foundation read: a
    repacked COTS by its repack stamp, a site file by its sha256."""
    only = sorted(f.path for f in context.files if f.repack)
    if not only:
        return None
    steps = instructions(dockerfile)
    stages: dict[str, list[Instruction]] = {}
    current: list[Instruction] = []
    for step in steps:
        stage = _stage_of(step)
        if stage is not None:
            current = stages.setdefault(stage[1] or f"#{len(stages)}", [])
        current.append(step)
    runtime = stages[RUNTIME_STAGE]
    last = max((i for i, step in enumerate(runtime) if _cots_written(step, context)), default=None)
    if last is None:
        return None
    written = _cots_written(runtime[last], context)
    if written is not None and written.env:
        last += 1  # its ENV
    kept = runtime[: last + 1]

    needed: list[str] = []

    def depend(on: list[Instruction]) -> None:
        for step in on:
            for name in _uses(step):
                if name in stages and name not in needed:
                    needed.append(name)
                    depend(stages[name])

    depend(kept)
    material = {
        "stages": {name: [step.text for step in stages[name]] for name in sorted(needed)},
        "runtime": [step.text for step in kept],
        "files": dict(sorted(identities.items())),
    }
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return Foundation(
        key=f"sha256:{key}",
        first_line=runtime[0].first_line,
        end_line=kept[-1].end_line,
        step=kept[-1].step,
        steps=len(steps),
        files=only,
    )


def read_foundation(context_dir: Path) -> Foundation | None:
    """The foundation render recorded beside the Dockerfile, if any (None also when unreadable)."""
    try:
        return Foundation.model_validate_json((context_dir / FOUNDATION_FILE).read_bytes())
    except (OSError, ValueError):
        return None

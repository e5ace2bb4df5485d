"""What a generated `.gitlab-ci.yml` says, as data: a pure function of the processors and the include.

The text is the template's business (`gitlab-ci.yml.j2`); everything decided — job prefixes, change
globs, release-tag prefixes, the order — is decided here, so it can be tested without rendering.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict

TEMPLATE_VERSION = "1"
"""Major version of the central template (`ci_templates/`); a generated file names the one it includes."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Include(_Frozen):
    """How the generated pipeline reaches the central template."""

    kind: Literal["component", "local"]
    address: str
    """A component address (`host/group/project/imagekit@1`) or a path in the repository."""


class ProcessorEntry(_Frozen):
    """One processor as the repository holds it."""

    name: str
    directory: str
    """Its directory relative to the repository's top level, POSIX form, "." for the top level."""


class ProcessorInputs(_Frozen):
    """The central template's inputs for one processor; None leaves the template's default."""

    name: str
    processor_dir: str | None
    image: str
    job_prefix: str | None
    changes: str | None
    tag_prefix: str | None


class PipelineContext(_Frozen):
    source: str
    """What the file was generated from, for its header."""
    command: str
    include: Include
    processors: list[ProcessorInputs]


def pipeline_context(
    processors: list[ProcessorEntry], *, include: Include, image: str, command: str
) -> PipelineContext:
    """Inputs per processor: alone in a repository it keeps every default (jobs `build`, tags `v*`);
    beside others its jobs are prefixed with its name, run only when its directory changed, and its
    release tags are `<name>/v<version>`."""
    ordered = sorted(processors, key=lambda p: p.directory)
    several = len(ordered) > 1
    entries = []
    for processor in ordered:
        directory = PurePosixPath(processor.directory).as_posix()
        entries.append(
            ProcessorInputs(
                name=processor.name,
                processor_dir=None if directory == "." else directory,
                image=image,
                job_prefix=f"{processor.name}:" if several else None,
                changes=f"{directory}/**/*" if several else None,
                tag_prefix=f"{processor.name}\\/" if several else None,
            )
        )
    if several:
        parents = sorted({PurePosixPath(p.processor_dir or ".").parent.as_posix() for p in entries})
        globs = ", ".join(
            "*/processor.yaml" if parent == "." else f"{parent}/*/processor.yaml" for parent in parents
        )
        source = f"{globs} ({len(entries)} processors)"
    else:
        only = entries[0] if entries else None
        source = f"{(only.processor_dir + '/') if only and only.processor_dir else ''}processor.yaml"
    return PipelineContext(source=source, command=command, include=include, processors=entries)

"""`imagekit ci render`: find the processors, decide the inputs, write the `.gitlab-ci.yml`."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import jinja2

from imagekit.ci.central import COMPONENT_FILE
from imagekit.ci.context import TEMPLATE_VERSION, Include, PipelineContext, ProcessorEntry, pipeline_context
from imagekit.config import Profile
from imagekit.errors import InputError
from imagekit.manifest import MANIFEST_NAME, load_manifest
from imagekit.resources import data_path

GENERATED_NAME = ".gitlab-ci.yml"
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@-]*")


@dataclass(frozen=True)
class RenderedPipeline:
    text: str
    path: Path
    """Where the text belongs: `.gitlab-ci.yml` at the repository's top level."""
    template_copy: Path | None
    """Where the central template is copied for an `include: local`, else None."""


def central_template() -> Path:
    """The central template as shipped: the component file, also includable with `include: local`."""
    return data_path("ci_templates") / COMPONENT_FILE


def job_image(profile: Profile) -> str:
    """The job image imagekit builds for itself from `ci_templates/job-image`, in the site registry."""
    return profile.ci.job_image or (
        f"{profile.registry.url}/{profile.registry.project}/imagekit-ci:{version('imagekit')}"
    )


def _scalar(value: str) -> str:
    """A YAML scalar: plain when it is unambiguous, single-quoted otherwise."""
    return value if _PLAIN.fullmatch(value) else "'" + value.replace("'", "''") + "'"


_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)
_ENVIRONMENT.filters["scalar"] = _scalar


def render_text(context: PipelineContext) -> str:
    text = _ENVIRONMENT.get_template("gitlab-ci.yml.j2").render(**dict(context), version=TEMPLATE_VERSION)
    return text.rstrip("\n") + "\n"


def repository_root(directory: Path) -> Path:
    """The git work tree's top level holding `directory` (GitLab reads the pipeline there), else itself."""
    result = subprocess.run(
        ["git", "-c", "safe.directory=*", "-C", str(directory), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        check=False,
    )
    return Path(result.stdout.strip()).resolve() if result.returncode == 0 else directory.resolve()


def find_processors(target: Path) -> list[Path]:
    """A processor directory, or the processor directories right below `target`."""
    if not target.is_dir():
        raise InputError(f"{target}: not a directory (give a processor directory or one holding several)")
    if (target / MANIFEST_NAME).is_file():
        return [target]
    found = sorted(file.parent for file in target.glob(f"*/{MANIFEST_NAME}"))
    if not found:
        raise InputError(f"{target}: no {MANIFEST_NAME} in this directory nor in its subdirectories")
    return found


def render_pipeline(
    target: Path, profile: Profile, *, local: str | None = None, command: str = ""
) -> RenderedPipeline:
    """The pipeline of one processor or of a directory of processors, including the central template
    as a component (the profile's `ci.component`) or, with `local`, from that path in the repository."""
    directories = find_processors(target)
    root = repository_root(target)
    entries = []
    for directory in directories:
        manifest = load_manifest(directory)
        relative = directory.resolve().relative_to(root) if directory.resolve() != root else Path(".")
        entries.append(ProcessorEntry(name=manifest.processor.processor.name, directory=relative.as_posix()))
    names = [entry.name for entry in entries]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InputError(f"{target}: processor names must differ to share a pipeline: {', '.join(twice)}")
    if local is not None:
        include = Include(kind="local", address=_local_path(local))
    else:
        include = Include(kind="component", address=profile.ci.component)
    context = pipeline_context(
        entries, include=include, image=job_image(profile), command=command or f"imagekit ci render {target}"
    )
    return RenderedPipeline(
        text=render_text(context),
        path=root / GENERATED_NAME,
        template_copy=root / include.address if include.kind == "local" else None,
    )


def _local_path(path: str) -> str:
    clean = Path(path)
    if clean.is_absolute() or ".." in clean.parts or not clean.parts:
        raise InputError(f"--local {path}: a path inside the repository, relative to its top level")
    return clean.as_posix()


def write_pipeline(rendered: RenderedPipeline, output: Path | None = None) -> list[Path]:
    """Write the pipeline (and the central template for an `include: local`); return what was written."""
    target = output or rendered.path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(rendered.text, encoding="utf-8")
    written = [target]
    if rendered.template_copy is not None:
        rendered.template_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(central_template(), rendered.template_copy)
        written.append(rendered.template_copy)
    return written

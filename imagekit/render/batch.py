"""Render one processor, or a mission's hundreds in one process, each exactly as alone.

A repository keeps many processors; rendering them one `imagekit render` at a time paid the
start-up, the git calls and the template compilation each time. Here the git provenance is read
once per work tree (every processor in it has the same HEAD), the templates are compiled once,
and every manifest is checked before the first file is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from imagekit.catalog import BaseRef, resolve_base
from imagekit.config import SiteSettings
from imagekit.errors import InputError
from imagekit.manifest import ChecksumCache, LoadedManifest, load_manifest
from imagekit.render.source import SourceInfo, source_info
from imagekit.render.writer import RenderResult, render

WORK_DIR = ".imagekit"
"""Rendered files live beside the manifest by default, in a folder the scaffold and .dockerignore exclude."""

Target = Literal["docker", "apptainer"]


def default_render_dir(manifest: LoadedManifest, target: str = "docker") -> Path:
    """Where a processor renders when no output is named: `<directory>/.imagekit/<target>`."""
    return manifest.directory / WORK_DIR / target


@dataclass(frozen=True)
class Rendered:
    manifest: LoadedManifest
    source: SourceInfo
    result: RenderResult


def base_of(manifest: LoadedManifest, data_dir: Path) -> BaseRef:
    """The base the Dockerfile starts FROM: the site's pin of a catalog profile, or the manifest's digest."""
    base = manifest.processor.base
    if base.profile:
        return resolve_base(base.profile, data_dir)
    if not base.digest:
        raise InputError(
            f"{manifest.path}: base.digest: required to render {base.image} (FROM is always pinned by digest)"
        )
    return BaseRef(image=base.image, digest=base.digest)


def _work_tree_key(directory: Path) -> Path | None:
    """The nearest folder holding a `.git`: processors below the same one share their provenance."""
    directory = directory.absolute()
    return next((folder for folder in (directory, *directory.parents) if (folder / ".git").exists()), None)


class _Sources:
    """source_info once per git work tree; per directory outside git, where its message names it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._by_tree: dict[Path, SourceInfo] = {}

    def of(self, directory: Path) -> SourceInfo:
        key = None if self._env.get("GIT_DIR") else _work_tree_key(directory)
        if key is None:
            return source_info(directory, self._env)
        if key not in self._by_tree:
            self._by_tree[key] = source_info(directory, self._env)
        return self._by_tree[key]


@dataclass(frozen=True)
class _Options:
    """What every processor of one call is rendered with."""

    data_dir: Path
    site: SiteSettings
    release: bool
    target: Target
    image_ref: str
    checksums: ChecksumCache | None
    bases: str | None


def _load(
    directory: Path, sources: _Sources, options: _Options
) -> tuple[LoadedManifest, SourceInfo, BaseRef]:
    source = sources.of(directory if directory.is_dir() else directory.parent)
    manifest = load_manifest(
        directory,
        release=options.release or bool(source.release_tag),
        checksums=options.checksums,
        bases=options.bases,
    )
    if options.checksums is not None:
        options.checksums.save()
    return manifest, source, base_of(manifest, options.data_dir)


def _render(
    manifest: LoadedManifest, source: SourceInfo, base: BaseRef, out: Path, options: _Options
) -> Rendered:
    result = render(
        manifest,
        out,
        base=base,
        site=options.site,
        source=source,
        target=options.target,
        image_ref=options.image_ref,
    )
    return Rendered(manifest, source, result)


def render_processor(
    directory: Path,
    out_dir: Path | None = None,
    *,
    data_dir: Path,
    site: SiteSettings,
    release: bool = False,
    target: Target = "docker",
    image_ref: str = "",
    env: Mapping[str, str] = os.environ,
    checksums: ChecksumCache | None = None,
    bases: str | None = None,
) -> Rendered:
    """Render one processor into `out_dir` (default: `<directory>/.imagekit/<target>`).

    `checksums` and `bases` go to load_manifest: a wrong COTS sha256 then gets its line and column
    before render copies the archive, and a `base.image` must be the site's copy."""
    options = _Options(data_dir, site, release, target, image_ref, checksums, bases)
    manifest, source, base = _load(directory, _Sources(env), options)
    return _render(manifest, source, base, out_dir or default_render_dir(manifest, target), options)


def render_processors(
    directories: Sequence[Path],
    out_root: Path | None = None,
    *,
    data_dir: Path,
    site: SiteSettings,
    release: bool = False,
    target: Target = "docker",
    image_ref: str = "",
    env: Mapping[str, str] = os.environ,
    checksums: ChecksumCache | None = None,
    bases: str | None = None,
) -> list[Rendered]:
    """Render many processors in one process: into `<out_root>/<processor name>/` each, or beside
    each manifest when `out_root` is None. Every manifest, base and name is checked first; a
    failure then leaves no processor half-written (each output is swapped in whole)."""
    options = _Options(data_dir, site, release, target, image_ref, checksums, bases)
    sources = _Sources(env)
    loaded = [_load(Path(d), sources, options) for d in directories]
    outs = [
        out_root / manifest.processor.processor.name
        if out_root is not None
        else default_render_dir(manifest, target)
        for manifest, _, _ in loaded
    ]
    seen: dict[Path, Path] = {}
    for (manifest, _, _), out in zip(loaded, outs, strict=True):
        other = seen.setdefault(out, manifest.path)
        if other != manifest.path:
            raise InputError(
                f"{manifest.path}: processor.name: '{manifest.processor.processor.name}' is also the name "
                f"in {other}; both would render into {out}"
            )
    return [
        _render(manifest, source, base, out, options)
        for (manifest, source, base), out in zip(loaded, outs, strict=True)
    ]

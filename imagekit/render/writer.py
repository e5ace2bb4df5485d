"""Write a rendered Dockerfile and its exact build context, or an Apptainer definition, atomically.

Everything is written into a staging directory beside `out_dir` and swapped in at the end, so a
failure leaves `out_dir` as it was. The context holds only the files the Dockerfile uses, at the
same relative paths as in the processor directory, plus the site CA files under site/ and each
local COTS archive repacked as cots/<name>.tar (`repack.py`). Beside the Dockerfile, foundation.json
says where its runtime stage's COTS layers end (`foundation.py`); the .dockerignore keeps it out of
the context.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from imagekit.catalog import BaseRef
from imagekit.config import SiteSettings
from imagekit.errors import InputError
from imagekit.manifest import LoadedManifest
from imagekit.render.context import CACHE_PATTERNS, ContextFile, RenderContext, Repack, render_context
from imagekit.render.foundation import FOUNDATION_FILE, foundation_of
from imagekit.render.repack import ChecksumMismatch, RepackError, repack_archive, reuse_previous
from imagekit.render.source import SourceInfo
from imagekit.render.templates import environment, render_template

LINK_THRESHOLD = 1 << 20
"""Files this large are hard-linked into the context when they can be, not copied."""
MARKER = "Rendered by imagekit"
DEFINITIONS = {"docker": "Dockerfile", "apptainer": "apptainer.def"}
_PINNED_IMAGE = re.compile(r"^\S+@sha256:[0-9a-f]{64}$")


class RenderResult(BaseModel):
    """What render() wrote; the build step runs `docker build` on `context_dir`."""

    model_config = ConfigDict(frozen=True)
    target: Literal["docker", "apptainer"]
    context_dir: Path
    definition: Path
    """The Dockerfile (or apptainer.def) inside context_dir."""
    files: list[str]
    """Every file written, relative to context_dir, sorted."""


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in CACHE_PATTERNS)


def _place(source: Path, target: Path) -> None:
    """Hard-link a large file when its mode is already 0644/0755, else copy it with that mode.

    Normal modes make the image independent of the umask of the checkout it was built from.
    """
    info = source.stat()
    mode = 0o755 if info.st_mode & 0o111 else 0o644
    if info.st_size >= LINK_THRESHOLD and stat.S_IMODE(info.st_mode) == mode:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copy2(source, target)
    target.chmod(mode)


def _copy_tree(source: Path, target: Path, skip: set[Path]) -> None:
    """A folder without local caches; symlinks stay symlinks (the manifest check keeps them inside)."""
    for folder, dirs, files in os.walk(source):
        here = Path(folder)
        destination = target / here.relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        destination.chmod(0o755)
        kept = []
        for name in sorted(dirs):
            path = here / name
            if _ignored(name) or path.resolve() in skip:
                continue
            if path.is_symlink():
                os.symlink(os.readlink(path), destination / name)
            else:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            path, copied = here / name, destination / name
            if _ignored(name) or copied.exists() or copied.is_symlink():
                continue
            if path.is_symlink():
                os.symlink(os.readlink(path), copied)
            else:
                _place(path, copied)


def _repack(
    manifest: LoadedManifest, item: ContextFile, repack: Repack, source: Path, target: Path, previous: Path
) -> None:
    """The local COTS archive, checked against its sha256 while it is read, as the tar ADD unpacks;
    `previous`, the same file of the last render, is reused when it was made from the same archive."""
    try:
        if not reuse_previous(previous, source, target, repack.placement, repack.sha256):
            repack_archive(source, target, repack.placement, repack.sha256)
    except ChecksumMismatch as exc:
        field = item.field.removesuffix(".source") + ".sha256"
        raise InputError(
            f"{manifest.path}: {field}: {item.source} has sha256 {exc.actual}, "
            f"the manifest says {repack.sha256}"
        ) from None
    except RepackError as exc:
        raise InputError(f"{manifest.path}: {item.field}: {item.source}: {exc}") from None


def _copy_context_file(
    manifest: LoadedManifest, item: ContextFile, staging: Path, out_dir: Path, skip: set[Path]
) -> None:
    source = Path(item.source) if Path(item.source).is_absolute() else manifest.directory / item.source
    where = item.field if item.field.startswith("site.") else f"{manifest.path}: {item.field}"
    if not source.exists():
        raise InputError(f"{where}: '{item.source}' does not exist")
    if item.field.startswith("site.") and not source.is_file():
        raise InputError(f"{where}: '{item.source}' is not a CA certificate file")
    target = staging / item.path
    target.parent.mkdir(parents=True, exist_ok=True)
    if item.repack:
        _repack(manifest, item, item.repack, source, target, out_dir / item.path)
    elif source.is_dir():
        _copy_tree(source, target, skip)
    elif not target.exists():
        _place(source, target)


def _foundation(context: RenderContext, dockerfile: str, staging: Path) -> str | None:
    """foundation.json's text: each file the foundation depends on named by what makes its bytes (a
    repacked archive by its stamp, a site file by its sha256)."""
    identities = {}
    for item in context.files:
        if item.repack:
            identities[item.path] = item.repack.placement.stamp(item.repack.sha256).decode()
        elif item.field.startswith("site."):
            identities[item.path] = hashlib.sha256((staging / item.path).read_bytes()).hexdigest()
    foundation = foundation_of(dockerfile, context, identities)
    return foundation.model_dump_json(indent=2) + "\n" if foundation else None


def _check_replaceable(out_dir: Path, manifest: LoadedManifest) -> None:
    """Refuse to replace a folder imagekit did not render, or one holding the processor itself."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory")
    if manifest.directory.resolve().is_relative_to(out_dir.resolve()):
        raise InputError(f"{out_dir}: holds the processor directory; render somewhere else")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        rendered = [out_dir / name for name in DEFINITIONS.values() if (out_dir / name).is_file()]
        if not any(MARKER in path.read_text(encoding="utf-8", errors="replace") for path in rendered):
            raise InputError(f"{out_dir}: not empty and not rendered by imagekit; refusing to replace it")


def _swap(staging: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    previous = staging.with_name(staging.name + ".previous")
    out_dir.rename(previous)
    try:
        staging.rename(out_dir)
    except OSError:
        previous.rename(out_dir)
        raise
    shutil.rmtree(previous)


def render(
    manifest: LoadedManifest,
    out_dir: Path,
    *,
    base: BaseRef,
    site: SiteSettings,
    source: SourceInfo,
    target: Literal["docker", "apptainer"] = "docker",
    image_ref: str = "",
) -> RenderResult:
    """Render the Dockerfile, .dockerignore and build context (or, for apptainer, a definition
    bootstrapping from `image_ref`, the pushed image pinned by digest) into `out_dir`."""
    if target == "apptainer" and not _PINNED_IMAGE.match(image_ref):
        raise InputError(
            f"an Apptainer definition bootstraps from the pushed image pinned by digest "
            f"(registry/name@sha256:<64 hex>), got '{image_ref}'"
        )
    context = render_context(manifest, base, site, source)
    env = environment()
    if target == "docker":
        texts = {
            "Dockerfile": render_template(env, "docker/Dockerfile.j2", context),
            ".dockerignore": render_template(env, "dockerignore.j2", context),
        }
    else:
        texts = {
            "apptainer.def": render_template(env, "apptainer/apptainer.def.j2", context, image_ref=image_ref)
        }
    out_dir = Path(out_dir)
    _check_replaceable(out_dir, manifest)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        staging.chmod(0o755)
        if target == "docker":
            skip = {out_dir.resolve(), staging.resolve()}
            for item in context.files:
                _copy_context_file(manifest, item, staging, out_dir, skip)
            foundation = _foundation(context, texts["Dockerfile"], staging)
            if foundation:
                texts[FOUNDATION_FILE] = foundation
        for name, text in texts.items():
            (staging / name).write_text(text, encoding="utf-8")
            (staging / name).chmod(0o644)
        files = sorted(
            str(path.relative_to(staging))
            for path in staging.rglob("*")
            if path.is_file() or path.is_symlink()
        )
        _swap(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RenderResult(
        target=target, context_dir=out_dir, definition=out_dir / DEFINITIONS[target], files=files
    )

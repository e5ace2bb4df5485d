"""Repack a local COTS archive into the tar that `ADD <tar> /` unpacks as `tar -xf` would have.

The legacy builder wrote each COTS three times (archive, unpacked stage, copy into the image).
`ADD` of a local uncompressed tar unpacks it in one layer on docker, podman and buildah, but keeps
the archive's owners and cannot strip components. So the archive is rewritten, streaming, into
exactly what `tar -xf ARCHIVE --no-same-owner --strip-components=N -C EXTRACT_TO` gives: names
placed under `extract_to` (relative to /), owned by root, with modes, mtimes, symlinks, hard links
and contents as in the archive. The archive's sha256 is computed while it is read and checked
before the output is kept; a member that would land outside `extract_to` is refused, never skipped.
The same archive always gives the same bytes, so the ADD layer's cache key is stable, and a render
reuses the previous render's output (hard-linked) when it was made from the same archive and
placement: a code-only rebuild does not rewrite hundreds of MB of COTS.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

OUTPUT_FORMAT = tarfile.PAX_FORMAT
REPACK_VERSION = "1"
"""Part of every output's stamp: raise it when the same archive would give other bytes."""
STAMP = "user.imagekit.repack"
"""The extended attribute naming what an output was made from (where the file system keeps them)."""
_CHUNK = 1 << 20


class RepackError(Exception):
    """The archive cannot be placed as `tar -xf` would place it; says which member and why."""


class ChecksumMismatch(Exception):
    """The archive is not the one the manifest names; `actual` is its sha256."""

    def __init__(self, actual: str) -> None:
        super().__init__(actual)
        self.actual = actual


@dataclass(frozen=True)
class Placement:
    extract_to: str
    """Absolute directory in the image."""
    strip_components: int

    def stamp(self, sha256: str) -> bytes:
        return f"{REPACK_VERSION} {sha256} {self.strip_components} {self.extract_to}".encode()


class _HashingReader:
    """A read-only stream that hashes every byte read through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.digest.update(data)
        return data

    def drain(self) -> str:
        while self.read(_CHUNK):
            pass
        return self.digest.hexdigest()


def _stripped(name: str, strip: int) -> str | None:
    """The member name with `strip` leading components dropped, as GNU tar counts them ('.' is one,
    repeated slashes are one separator); None when nothing is left."""
    parts = [part for part in name.split("/") if part]
    if len(parts) <= strip:
        return None
    return posixpath.normpath("/".join(parts[strip:]))


def _escapes(name: str) -> str | None:
    if name.startswith("/"):
        return "has an absolute name"
    if ".." in name.split("/"):
        return "has '..' in its name"
    return None


def _header(source: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    """A fresh header: only what `tar -xf --no-same-owner` restores (no owners, no xattrs)."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.REGTYPE if source.isreg() else source.type
    info.mode = source.mode
    info.mtime = source.mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.size = source.size if source.isreg() else 0
    info.linkname = source.linkname if source.issym() else ""
    if source.ischr() or source.isblk():
        info.devmajor, info.devminor = source.devmajor, source.devminor
    return info


def _directory(name: str, mode: int = 0o755, mtime: float = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, mtime
    return info


def _members(archive: tarfile.TarFile, output: tarfile.TarFile, placement: Placement) -> None:
    """Every member placed under extract_to, after one entry for extract_to itself (0755, or the
    archive's own `.` when it comes first); nothing for its parents, so the base's keep theirs."""
    prefix = placement.extract_to.strip("/")
    placed: set[str] = set()
    opened = not prefix  # extract_to "/" is the image's root: never written

    def where(relative: str) -> str:
        return f"{prefix}/{relative}" if prefix else relative

    for member in archive:
        problem = _escapes(member.name)
        if problem:
            raise RepackError(f"member '{member.name}' {problem}")
        relative = _stripped(member.name, placement.strip_components)
        if relative == ".":
            if not member.isdir():
                raise RepackError(f"member '{member.name}' stands for extract_to but is no directory")
            if prefix:
                output.addfile(_directory(prefix, member.mode, member.mtime))
            opened = True
            continue
        if not opened:
            output.addfile(_directory(prefix))
            opened = True
        if relative is None:
            continue
        name = where(relative)
        info = _header(member, name)
        if member.islnk():
            problem = _escapes(member.linkname)
            target = _stripped(member.linkname, placement.strip_components)
            if problem:
                raise RepackError(
                    f"member '{member.name}' is a hard link to '{member.linkname}', which {problem}"
                )
            if target is None or where(target) not in placed:
                raise RepackError(
                    f"member '{member.name}' is a hard link to '{member.linkname}', "
                    "which is not unpacked before it"
                )
            info.linkname = where(target)
        output.addfile(info, archive.extractfile(member) if member.isreg() else None)
        placed.add(name)
    if not opened:
        output.addfile(_directory(prefix))


def repack_archive(source: Path, target: Path, placement: Placement, sha256: str) -> None:
    """Write `target` from the archive at `source`; raises ChecksumMismatch when the archive is not
    the one `sha256` names (checked first, whatever else is wrong), RepackError for a member that
    cannot be placed or an archive that cannot be read. `target` is kept only on success."""
    failure: RepackError | None = None
    try:
        with source.open("rb") as raw:
            reader = _HashingReader(raw)
            try:
                stream = {"mode": "r|*", "bufsize": _CHUNK}
                with (
                    tarfile.open(fileobj=reader, **stream) as archive,  # type: ignore[call-overload]
                    tarfile.open(target, "w", format=OUTPUT_FORMAT, encoding="utf-8") as output,
                ):
                    # tarfile copies in 16 KiB pieces by default, at half the speed
                    output.copybufsize = _CHUNK  # type: ignore[attr-defined]
                    _members(archive, output, placement)
            except RepackError as exc:
                failure = exc
            except (tarfile.TarError, EOFError) as exc:
                failure = RepackError(f"cannot be read as a tar, tar.gz, tar.bz2 or tar.xz archive ({exc})")
            actual = reader.drain()
        if actual != sha256:
            raise ChecksumMismatch(actual)
        if failure is not None:
            raise failure
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # no user xattrs here: the next render repacks again
        os.setxattr(target, STAMP, placement.stamp(sha256))


def reuse_previous(previous: Path, source: Path, target: Path, placement: Placement, sha256: str) -> bool:
    """Hard-link `previous` (the last render's output) to `target` when its stamp says it was made
    from this archive and placement; the archive is hashed again (raises ChecksumMismatch), so a
    changed archive never reaches a build. False when the previous output cannot be reused."""
    try:
        if os.getxattr(previous, STAMP, follow_symlinks=False) != placement.stamp(sha256):
            return False
    except OSError:
        return False
    with source.open("rb") as stream:
        actual = hashlib.file_digest(stream, "sha256").hexdigest()
    if actual != sha256:
        raise ChecksumMismatch(actual)
    try:
        os.link(previous, target)
    except OSError:
        return False
    return True

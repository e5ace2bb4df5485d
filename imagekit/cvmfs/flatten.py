"""Apply OCI layers, in order, to one directory: the image's root filesystem as `docker export` shows it.

Whiteouts and opaque directories remove what lower layers wrote; hard links may point to files of
earlier layers; symlinks are created, never followed. Every check reads the index (the tree as the
layers define it), so an entry that would leave the tree — `..`, an absolute name, a parent that is a
symlink or a file, a hard link to outside — is refused with its layer and name before anything is
written. Device nodes and FIFOs are skipped and reported. An existing file is always replaced by
unlink-then-create, so a tree that shares inodes with this one (a hard-link copy) never changes.

With a second tree (`cvmfs.layers`), each layer is also written on its own, as containerd's overlayfs
snapshotter unpacks it for the CVMFS snapshotter (`.layers/<d[0:2]>/<d>/layerfs`): whiteouts become
character devices 0/0, opaque directories get `trusted.overlay.opaque=y`, and every file is a hard
link of the file just written to the flat (no data is written twice). The flat's checks run first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import shutil
import stat
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, cast

from isal import isal_zlib

from imagekit.cvmfs.index import DIR, FILE, OPAQUE_XATTR, OVERLAY_WHITEOUT, SYMLINK, Entry, Index
from imagekit.errors import InputError, ToolError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
CHUNK = 1 << 20
HEADER_LIMIT = 16 << 20
"""The most a pax or GNU long-name header may hold (it is read whole)."""
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_INFLATE_ERROR = cast("type[Exception]", isal_zlib.error)  # isal's stub declares an instance, not a class


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class _Contents(Protocol):
    def contents(self, member: tarfile.TarInfo) -> Iterator[bytes]: ...


class UnsafeLayer(InputError):
    """A layer entry would write outside the tree; nothing of the publication is kept."""


@dataclass
class Stats:
    entries_written: int = 0
    bytes_written: int = 0
    skipped: list[str] = field(default_factory=list)
    """Entries not created (device nodes, FIFOs), as '<layer>: <name> (<why>)'."""
    warnings: list[str] = field(default_factory=list)
    entries_seen: int = 0
    bytes_seen: int = 0
    """Tar entries and regular-file bytes read from the layers, counted against `Limits`."""


@dataclass(frozen=True)
class Limits:
    """Bounds of one publication (`cvmfs.max_entries`, `cvmfs.max_bytes`): a file-count or size bomb
    is refused as it is read, before it fills the disk."""

    max_entries: int
    max_bytes: int

    def too_many(self, layer: str) -> UnsafeLayer:
        return UnsafeLayer(
            f"layer {layer}: more than {self.max_entries} entries in the image (cvmfs.max_entries); "
            "refused, nothing published"
        )

    def too_large(self, layer: str, name: str) -> UnsafeLayer:
        return UnsafeLayer(
            f"layer {layer}: '{name}' takes the image past {self.max_bytes} bytes of files "
            "(cvmfs.max_bytes); refused, nothing published"
        )


@dataclass(frozen=True)
class Meta:
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: float = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()


class Tree:
    """The index and, when `root` is given, the directory it describes, changed together."""

    def __init__(
        self,
        index: Index,
        root: Path | None,
        stats: Stats | None = None,
        *,
        markers: bool = True,
        limits: Limits | None = None,
        digests: bool = True,
    ) -> None:
        self.index = index
        self.root = root
        self.stats = stats or Stats()
        self.limits = limits
        self.markers = markers
        """Whether overlayfs markers (whiteouts, opaque) can be written here (not through a CVMFS union)."""
        self.digests = digests
        """Whether an index without a directory hashes contents (not where they are hashed as sent on)."""
        self._own_inodes: set[int] = set()
        self._layer_nodes: set[int] = set()
        """Files the layer being applied wrote: a hard link to one of them shares its inode, as in the
        layer's own directory; a hard link to an earlier layer's file copies it up first (overlayfs)."""
        self._dir_times: list[tuple[str, float]] = []

    def _disk(self, path: str) -> str:
        assert self.root is not None
        return os.path.join(self.root, path)

    def account(self, member: tarfile.TarInfo, layer: str) -> None:
        """Count one tar entry (and its file bytes) against the limits; refuse the image past them."""
        self.stats.entries_seen += 1
        self.stats.bytes_seen += member.size if member.isreg() else 0
        if self.limits is None:
            return
        if self.stats.entries_seen > self.limits.max_entries:
            raise self.limits.too_many(layer)
        if self.stats.bytes_seen > self.limits.max_bytes:
            raise self.limits.too_large(layer, member.name)

    def _apply_meta(self, path: str, meta: Meta, *, is_link: bool = False, fd: int | None = None) -> None:
        """Owner, mode and xattrs; through `fd` where the file is still open (no lookup of its path)."""
        full = self._disk(path)
        if fd is None:
            os.lchown(full, meta.uid, meta.gid)
        else:
            os.chown(fd, meta.uid, meta.gid)
        if not is_link:
            os.chmod(full if fd is None else fd, meta.mode)  # after chown, which clears setuid/setgid
        for name, value in meta.xattrs:
            try:
                if fd is None:
                    os.setxattr(full, name, value, follow_symlinks=False)
                else:
                    os.setxattr(fd, name, value)
            except OSError as exc:
                self.stats.warnings.append(f"/{path}: xattr {name} not kept: {exc.strerror}")

    def remove(self, path: str) -> None:
        found = self.index.get(path)
        if found is None:
            return
        self.index.remove(path)
        if self.root is None:
            return
        full = self._disk(path)
        if found.kind == DIR:
            shutil.rmtree(full)
        else:
            os.unlink(full)

    def _replace(self, path: str, kind: str) -> bool:
        """Clear `path` for a new entry of `kind`; True if an existing directory is to be kept."""
        found = self.index.get(path)
        if found is not None and found.kind == DIR and kind == DIR:
            return True
        self.remove(path)
        return False

    def put_dir(self, path: str, meta: Meta) -> None:
        found = self.index.get(path)
        keep = self._replace(path, DIR)
        opaque = keep and found is not None and found.opaque  # a marker on it stays, as its xattr does
        self.index.put(path, Entry(DIR, meta.mode, meta.uid, meta.gid, opaque=opaque))
        self.stats.entries_written += 1
        if self.root is not None:
            if not keep:
                os.mkdir(self._disk(path), 0o700)
            self._apply_meta(path, meta)
            self._dir_times.append((path, meta.mtime))

    def put_file(self, path: str, meta: Meta, chunks: Iterable[bytes]) -> None:
        self._replace(path, FILE)
        digest = hashlib.sha256()
        size = 0
        if self.root is None:
            for chunk in chunks:
                if self.digests:
                    digest.update(chunk)
                size += len(chunk)
        else:
            full = self._disk(path)
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                hole = False
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    hole = bool(chunk) and not chunk[0] and not chunk[-1] and chunk == bytes(len(chunk))
                    if hole:
                        os.lseek(fd, len(chunk), os.SEEK_CUR)  # zeros stay a hole: sparse files stay sparse
                        continue
                    written = os.write(fd, chunk)
                    if written < len(chunk):
                        view = memoryview(chunk)[written:]
                        while view:
                            view = view[os.write(fd, view) :]
                if hole:
                    os.ftruncate(fd, size)  # a hole at the end has no bytes to give the file its size
                self._apply_meta(path, meta, fd=fd)
                os.utime(fd, (meta.mtime, meta.mtime))
                self._own_inodes.add(os.fstat(fd).st_ino)
            finally:
                os.close(fd)
        node = self.index.new_node()
        self._layer_nodes.add(node)
        sha256 = digest.hexdigest() if self.digests or self.root is not None else ""
        self.index.put(path, Entry(FILE, meta.mode, meta.uid, meta.gid, size, sha256, node=node))
        self.stats.entries_written += 1
        self.stats.bytes_written += size

    def put_bytes(self, path: str, data: bytes, mode: int) -> None:
        self.put_file(path, Meta(mode), [data])

    def put_symlink(self, path: str, target: str, meta: Meta) -> None:
        self._replace(path, SYMLINK)
        if self.root is not None:
            full = self._disk(path)
            os.symlink(target, full)
            self._apply_meta(path, meta, is_link=True)
            os.utime(full, (meta.mtime, meta.mtime), follow_symlinks=False)
        self.index.put(path, Entry(SYMLINK, 0o777, meta.uid, meta.gid, len(target.encode()), target=target))
        self.stats.entries_written += 1

    def put_hardlink(self, path: str, target: str, meta: Meta) -> None:
        """A second name for `target`; its inode takes the entry's metadata, as Docker applies it."""
        linked = self.index.get(target)
        assert linked is not None and linked.kind in (FILE, SYMLINK)
        if path == target:
            return
        self._replace(path, linked.kind)
        same = (linked.mode, linked.uid, linked.gid) == (meta.mode, meta.uid, meta.gid)
        shared = linked.node not in self._layer_nodes or (
            self.root is not None and os.lstat(self._disk(target)).st_ino not in self._own_inodes
        )
        if linked.kind == FILE and not same and shared:
            self._copy_up(target, linked)
            linked = self.index.get(target) or linked
        if self.root is not None:
            os.link(self._disk(target), self._disk(path), follow_symlinks=False)
            if linked.kind == FILE and not same:
                self._apply_meta(path, meta)
        if linked.kind == FILE and not same:
            self.index.set_node_metadata(linked.node, meta.mode, meta.uid, meta.gid)
            linked = self.index.get(target) or linked
        self.index.put(path, linked)
        self.stats.entries_written += 1

    def link_from(self, path: str, other: Tree, source: str) -> None:
        """`path` as a new name of `other`'s file or symlink `source` (never changed in place later)."""
        found = other.index.get(source)
        assert found is not None and found.kind in (FILE, SYMLINK)
        self._replace(path, found.kind)
        if self.root is not None:
            full = other._disk(source)
            other._own_inodes.discard(os.lstat(full).st_ino)  # shared now: a chmod through a link copies up
            os.link(full, self._disk(path), follow_symlinks=False)
        self.index.put(path, replace(found, node=self.index.new_node()))
        self.stats.entries_written += 1

    def _marker_refused(self, what: str) -> ToolError:
        return ToolError(
            f"{what}: an overlayfs marker for the containerd snapshotter's .layers cannot be written "
            "through a cvmfs_server transaction (its own overlay takes it as a change); publish with "
            "cvmfs.layers = false there (see cvmfs/README.md)"
        )

    def put_whiteout(self, path: str) -> None:
        """An overlayfs whiteout: the name a layer deletes from the layers below it."""
        if not self.markers:
            raise self._marker_refused(f"whiteout /{path}")
        self._replace(path, OVERLAY_WHITEOUT)
        if self.root is not None:
            try:
                os.mknod(self._disk(path), stat.S_IFCHR, os.makedev(0, 0))
            except OSError as exc:
                raise ToolError(f"cannot create the whiteout /{path}: {exc.strerror} (needs root)") from exc
        self.index.put(path, Entry(OVERLAY_WHITEOUT, 0, 0, 0))
        self.stats.entries_written += 1

    def mark_opaque(self, path: str) -> None:
        """An overlayfs opaque directory: it hides what the layers below have in it."""
        if not self.markers:
            raise self._marker_refused(f"opaque directory /{path}")
        found = self.index.get(path)
        assert found is not None and found.kind == DIR
        if self.root is not None:
            try:
                os.setxattr(self._disk(path), OPAQUE_XATTR, b"y", follow_symlinks=False)
            except OSError as exc:
                raise ToolError(
                    f"cannot mark /{path} opaque ({OPAQUE_XATTR}): {exc.strerror} (needs root)"
                ) from exc
        self.index.put(path, replace(found, opaque=True))

    def _copy_up(self, path: str, entry: Entry) -> None:
        """Give `path` an inode of its own before its metadata changes (it is shared with an earlier
        layer, or another tree)."""
        if self.root is None:
            node = self.index.new_node()
            self._layer_nodes.add(node)
            self.index.put(path, replace(entry, node=node))
            return
        full = self._disk(path)
        mtime = os.lstat(full).st_mtime
        with open(full, "rb") as source:
            chunks = list(iter(lambda: source.read(CHUNK), b""))
        self.put_file(path, Meta(entry.mode, entry.uid, entry.gid, mtime), chunks)

    def finish_layer(self) -> None:
        """Directory times last: creating their children changed them."""
        self._layer_nodes.clear()
        if self.root is None:
            return
        for path, mtime in reversed(self._dir_times):
            if self.index.get(path) is not None and self.index.get(path).kind == DIR:  # type: ignore[union-attr]
                os.utime(self._disk(path), (mtime, mtime), follow_symlinks=False)
        self._dir_times.clear()


def components(name: str, layer: str, what: str = "entry") -> list[str]:
    """A member's name as the parts of a path in the tree; an absolute name or one with `..` is refused."""
    if name.startswith("/"):
        raise UnsafeLayer(f"layer {layer}: {what} '{name}' is an absolute name; refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"layer {layer}: {what} '{name}' contains '..' and would escape the tree; refused")
    return parts


class _Layer:
    """One layer being applied: the paths it created (a whiteout never removes those) and its checks."""

    def __init__(self, tree: Tree, name: str, layerfs: Tree | None = None) -> None:
        self.tree = tree
        self.name = name
        self.created: set[str] = set()
        self.layerfs = _LayerFs(layerfs, tree, name) if layerfs is not None else None

    def parent_ok(self, parts: list[str], entry: str) -> None:
        """Every parent must be a directory of the tree; missing ones are created (0755 root)."""
        path = ""
        for part in parts[:-1]:
            path = f"{path}/{part}" if path else part
            found = self.tree.index.get(path)
            if found is None:
                self.tree.put_dir(path, Meta(0o755))
                self.created.add(path)
            elif found.kind == SYMLINK:
                raise UnsafeLayer(
                    f"layer {self.name}: entry '{entry}' would be written through the symlink "
                    f"/{path}; refused"
                )
            elif found.kind != DIR:
                raise UnsafeLayer(f"layer {self.name}: entry '{entry}': parent /{path} is not a directory")

    def whiteout(self, parts: list[str], entry: str) -> None:
        self.parent_ok(parts, entry)
        if self.layerfs is not None:
            self.layerfs.whiteout(parts, entry)
        parent = "/".join(parts[:-1])
        base = parts[-1]
        if base == OPAQUE:
            for child in self.tree.index.list_dir(parent):
                path = f"{parent}/{child}" if parent else child
                if path not in self.created:
                    self.tree.remove(path)
        elif base.startswith(WHITEOUT + WHITEOUT):
            return  # AUFS bookkeeping (.wh..wh.plnk and the like), never part of the image
        else:
            path = "/".join([*parts[:-1], base[len(WHITEOUT) :]])
            if path not in self.created:
                self.tree.remove(path)

    def apply(self, member: tarfile.TarInfo, archive: _Contents) -> str | None:
        """The path of the entry the member made, None for one it made none for."""
        self.tree.account(member, self.name)
        parts = components(member.name, self.name)
        if not parts:
            return None  # the root itself keeps 0755 root:root
        if parts[-1].startswith(WHITEOUT):
            self.whiteout(parts, member.name)
            return None
        path = "/".join(parts)
        if member.ischr() or member.isblk() or member.isfifo():
            kind = "FIFO" if member.isfifo() else "device node"
            self.tree.stats.skipped.append(f"{self.name}: /{path} ({kind}, not created)")
            return None
        self.parent_ok(parts, member.name)
        meta = Meta(member.mode & 0o7777, member.uid, member.gid, member.mtime, _xattrs(member))
        if member.mode & (stat.S_ISUID | stat.S_ISGID) and (member.isreg() or member.islnk()):
            self.tree.stats.warnings.append(
                f"/{path}: setuid/setgid kept ({oct(member.mode & 0o7777)}); CVMFS clients may strip it"
            )
        if member.isdir():
            self.tree.put_dir(path, meta)
        elif member.isreg():
            self.tree.put_file(path, meta, archive.contents(member))
        elif member.issym():
            self.tree.put_symlink(path, member.linkname, meta)
        elif member.islnk():
            target_parts = components(member.linkname, self.name, f"hard link '{member.name}' ->")
            self.parent_ok([*target_parts], member.linkname)
            target = "/".join(target_parts)
            found = self.tree.index.get(target)
            if found is None or found.kind not in (FILE, SYMLINK):
                raise UnsafeLayer(
                    f"layer {self.name}: hard link '{member.name}' -> '{member.linkname}': "
                    "target is not a file of the tree; refused"
                )
            self.tree.put_hardlink(path, target, meta)
        else:
            self.tree.stats.skipped.append(f"{self.name}: /{path} (tar type {member.type!r}, not created)")
            return None
        self.created.add(path)
        if self.layerfs is not None:
            self.layerfs.apply(member, parts, meta)
        return path


class _LayerFs:
    """The layer on its own (`.layers/…/layerfs`), written after the flat accepted each entry."""

    def __init__(self, tree: Tree, flat: Tree, name: str) -> None:
        self.layer = _Layer(tree, name)
        self.flat = flat

    def whiteout(self, parts: list[str], entry: str) -> None:
        layer = self.layer
        layer.parent_ok(parts, entry)
        parent, base = "/".join(parts[:-1]), parts[-1]
        if base == OPAQUE:
            layer.tree.mark_opaque(parent)
        elif not base.startswith(WHITEOUT + WHITEOUT):
            path = "/".join([*parts[:-1], base[len(WHITEOUT) :]])
            if path not in layer.created:
                layer.tree.put_whiteout(path)

    def apply(self, member: tarfile.TarInfo, parts: list[str], meta: Meta) -> None:
        layer, path = self.layer, "/".join(parts)
        layer.parent_ok(parts, member.name)
        if member.isdir():
            found = layer.tree.index.get(path)
            layer.tree.put_dir(path, meta)
            if found is not None and found.kind == OVERLAY_WHITEOUT:
                layer.tree.mark_opaque(path)  # deleted, then made again: nothing of the lower one shows
        elif member.issym():
            layer.tree.put_symlink(path, member.linkname, meta)
        else:
            target = "/".join(components(member.linkname, self.layer.name)) if member.islnk() else ""
            found = layer.tree.index.get(target) if target else None
            if found is not None and found.kind in (FILE, SYMLINK):
                layer.tree.put_hardlink(path, target, meta)
            else:  # a file, or a link to a lower layer's file: this layer holds its own copy, as overlayfs
                layer.tree.link_from(path, self.flat, path)
        layer.created.add(path)


def _xattrs(member: tarfile.TarInfo) -> tuple[tuple[str, bytes], ...]:
    prefix = "SCHILY.xattr."
    return tuple(
        (key[len(prefix) :], value.encode("utf-8", "surrogateescape"))
        for key, value in sorted(member.pax_headers.items())
        if key.startswith(prefix)
    )


_END = object()
_ZEROS = bytes(CHUNK)


def _read(stream: Readable) -> Iterator[bytes]:
    while data := stream.read(CHUNK):
        yield data


def _uncompressed(blob: Iterator[bytes], layer: str) -> Iterator[bytes]:
    """The layer blob's tar, gzip'd or plain (zstd is refused with a clear reason), in chunks of at
    most CHUNK bytes: a small blob that inflates to gigabytes never sits in memory at once. ISA-L
    inflates (and checks the CRC) 3-4 times as fast as zlib here, on the same deflate streams."""
    data = next(blob, b"")
    if data.startswith(_ZSTD_MAGIC):
        raise ToolError(f"layer {layer} is zstd-compressed; imagekit publishes gzip and plain tar layers")
    if not data.startswith(_GZIP_MAGIC):
        while data:
            yield data
            data = next(blob, b"")
        return
    inflate = isal_zlib.decompressobj(isal_zlib.MAX_WBITS | 16)
    while True:
        if not data:
            data = next(blob, b"")
            if not data:
                if not inflate.eof:
                    raise ToolError(f"layer {layer}: the stream ended inside its gzip data (truncated blob)")
                return
        if inflate.eof:  # a multi-member gzip: the next member follows at once, or nothing may
            if data[0] != _GZIP_MAGIC[0]:
                raise ToolError(f"layer {layer}: corrupt gzip data: what follows its last member is not gzip")
            inflate = isal_zlib.decompressobj(isal_zlib.MAX_WBITS | 16)
        try:
            out = inflate.decompress(data, CHUNK)
        except _INFLATE_ERROR as exc:
            raise ToolError(f"layer {layer}: corrupt gzip data: {exc}") from exc
        data = inflate.unused_data if inflate.eof else inflate.unconsumed_tail
        if out:
            yield out


class _Prefetch:
    """Chunks made by a thread of its own. The blob is read (socket, blob digest) by one and inflated
    by another: both release the GIL, so the next bytes arrive while the caller writes the tree."""

    def __init__(self, chunks: Iterator[bytes], name: str) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=16)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(chunks,), name=name, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.get():
            yield chunk

    def _run(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in chunks:
                if not self._put(chunk):
                    return
        except BaseException as exc:  # handed to the writing thread, which raises it
            self._put(exc)
            return
        self._put(_END)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> bytes:
        """The next chunk; b"" at the end (or once the thread was stopped)."""
        while not self._done:
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self._done = True
        else:
            return b""
        if isinstance(item, bytes):
            return item
        self._done = True
        if isinstance(item, BaseException):
            raise item
        return b""

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _zeros(size: int) -> Iterator[bytes]:
    while size > 0:
        yield _ZEROS if size >= CHUNK else bytes(size)
        size -= CHUNK


class TarStream:
    """The uncompressed tar as `tarfile.TarInfo.fromtarfile` reads headers from it (pax, GNU long
    names); a file's data is handed on in the chunks it arrived in, never joined or copied again."""

    encoding = tarfile.ENCODING
    errors = "surrogateescape"

    def __init__(self, source: _Prefetch, layer: str) -> None:
        self.fileobj = self
        self.layer = layer
        self.pax_headers: dict[str, str] = {}
        self.offset = 0
        self._source = source
        self._chunk = b""
        self._pos = 0
        self._tell = 0

    def tell(self) -> int:
        return self._tell

    def _piece(self, size: int) -> bytes:
        if self._pos == len(self._chunk):
            self._chunk, self._pos = self._source.get(), 0
        piece = self._chunk[self._pos : self._pos + size]  # the chunk itself when all of it is wanted
        self._pos += len(piece)
        self._tell += len(piece)
        return piece

    def _unread(self, block: bytes) -> None:
        if self._pos >= len(block):
            self._pos -= len(block)
        else:  # it began in the chunk before
            self._chunk, self._pos = block + self._chunk[self._pos :], 0
        self._tell -= len(block)

    def read(self, size: int) -> bytes:
        """Header bytes (a pax or GNU long-name header's data is read whole, so it is bounded)."""
        if size > HEADER_LIMIT:
            raise UnsafeLayer(f"layer {self.layer}: a tar header of {size} bytes; refused, nothing published")
        parts = []
        while size > 0 and (piece := self._piece(size)):
            parts.append(piece)
            size -= len(piece)
        return b"".join(parts)

    def pieces(self, size: int, name: str) -> Iterator[bytes]:
        """`size` bytes of a member's data, as they come."""
        while size > 0:
            piece = self._piece(size)
            if not piece:
                raise ToolError(f"layer {self.layer}: the tar ends inside '{name}' (truncated layer)")
            size -= len(piece)
            yield piece

    def contents(self, member: tarfile.TarInfo) -> Iterator[bytes]:
        """A regular member's bytes; a sparse one's holes as runs of zeros (written as holes again)."""
        if member.sparse is None:
            yield from self.pieces(member.size, member.name)
            return
        at = 0
        for offset, size in cast("list[tuple[int, int]]", member.sparse):  # typeshed says int
            if not size:
                continue  # GNU's unused slots and end mark hold no data
            if offset < at or offset + size > member.size:
                raise InputError(
                    f"layer {self.layer}: '{member.name}': its sparse map is not in order; refused"
                )
            yield from _zeros(offset - at)
            yield from self.pieces(size, member.name)
            at = offset + size
        yield from _zeros(member.size - at)

    def skip_to(self, offset: int) -> None:
        for _ in self.pieces(offset - self._tell, "padding"):
            pass

    def members(self) -> Iterator[tarfile.TarInfo]:
        """Each member's header; the caller reads its data (`contents`) before asking for the next."""
        while True:
            block = self.read(tarfile.BLOCKSIZE)
            if not block and self._tell == 0:
                raise ToolError(f"layer {self.layer}: not a readable tar: empty")
            if not block or block == bytes(tarfile.BLOCKSIZE):
                return  # the zero block that ends the archive (or its end without one, as tarfile takes it)
            self._unread(block)
            try:
                member = tarfile.TarInfo.fromtarfile(self)  # type: ignore[arg-type]
            except tarfile.HeaderError as exc:
                raise ToolError(f"layer {self.layer}: not a readable tar: {exc}") from None
            yield member
            self.skip_to(self.offset)  # what the member's data left unread, and its padding


@contextlib.contextmanager
def open_layer(stream: Readable, layer: str) -> Iterator[TarStream]:
    """A layer blob (as stored in the registry) as a tar being read: its members, each one's contents.
    Read to its end, so that the blob's digest is checked over every byte."""
    blob = _Prefetch(_read(stream), "layer-download")
    source = _Prefetch(_uncompressed(iter(blob), layer), "layer-inflate")
    try:
        yield TarStream(source, layer)
        while source.get():
            pass  # the end blocks and padding: the blob's digest covers every byte
    finally:
        source.stop()
        blob.close()
        source.close()


def apply_layer(tree: Tree, stream: Readable, layer: str, layerfs: Tree | None = None) -> None:
    """Apply one layer blob on top of `tree`, and to `layerfs` on its own."""
    current = _Layer(tree, layer, layerfs)
    try:
        with open_layer(stream, layer) as archive:
            for member in archive.members():
                current.apply(member, archive)
    finally:
        tree.finish_layer()
        if layerfs is not None:
            layerfs.finish_layer()


class _Unread:
    """The contents of members read past: runs of zeros of their size, for an index that counts them."""

    @staticmethod
    def contents(member: tarfile.TarInfo) -> Iterator[bytes]:
        return _zeros(member.size)


def apply_members(
    tree: Tree, members: list[tarfile.TarInfo], layer: str, made: Callable[[tarfile.TarInfo, str], None]
) -> None:
    """Apply a layer's members (their contents read past) to an index alone (a tree without a directory,
    that does not hash contents), with every check `apply_layer` makes; `made(member, path)` is told of
    each entry made."""
    assert tree.root is None and not tree.digests
    current = _Layer(tree, layer)
    try:
        for member in members:
            path = current.apply(member, _Unread)
            if path is not None:
                made(member, path)
    finally:
        tree.finish_layer()

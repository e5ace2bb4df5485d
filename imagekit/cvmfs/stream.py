"""A whole new flat, and the snapshot of it below its last layer (its chain), as one tar stream for
`cvmfs_server ingest`: nothing of it is written to disk first, and ingest takes it as it is read.

The first pass applies the layers to an index alone, with the same `Tree` and checks as a flat on disk
(whiteouts, opaque directories, hard links, every refusal and limit), so the whole tree is known and
judged before a byte is sent; it notes which tar member gives each file its contents. The second pass
reads the blobs again while ingest takes the stream: the directories and symlinks from the index
first, then each file's bytes as its member comes by, hashed as they pass (the hashes go into the
index), each other name of the same contents right after it as a hard link, which ingest clones.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from imagekit.cvmfs.flatten import Limits, Stats, Tree, Writable, apply_members, open_layer, read_members
from imagekit.cvmfs.index import DIR, FILE, SYMLINK, Entry, Index
from imagekit.cvmfs.layout import add_runtime_files
from imagekit.cvmfs.source import Image, Layer
from imagekit.errors import ToolError
from imagekit.registry import RegistryClient

Log = Callable[[str], None]
Source = tuple[int, int]
"""A file's contents: (layer number, offset of its member's data in the layer's tar); (-1, node) for a
file imagekit adds (`.singularity.d`), whose bytes are in memory."""
Group = tuple[int, int, int]
"""Names of one source that can be hard links of one another: the same mode and owner."""
_SPOOL = 64 << 20


@dataclass(eq=False)
class PlannedTree:
    rel: str
    index: Index
    mtimes: dict[str, tuple[float, Entry]]
    """A directory's or symlink's time, with the entry it was set on (a later entry of the path has 0)."""
    node_times: dict[int, float]


@dataclass
class Plan:
    trees: list[PlannedTree]
    """The flat, then its chain snapshot when one is kept."""
    stats: Stats
    sources: dict[int, Source]
    memory: dict[int, bytes]


class _Planning(Tree):
    """The index alone; the bytes of the files made from memory are kept (for the second pass)."""

    def __init__(self, index: Index, limits: Limits) -> None:
        super().__init__(index, None, limits=limits, digests=False)
        self.memory: dict[int, bytes] = {}
        self.copied: dict[int, int] = {}
        """A file's node given an inode of its own → the node it was a name of (the same contents)."""

    def _copy_up(self, path: str, entry: Entry) -> None:
        super()._copy_up(path, entry)
        copy = self.index.get(path)
        assert copy is not None
        self.copied[copy.node] = entry.node

    def put_bytes(self, path: str, data: bytes, mode: int) -> None:
        super().put_bytes(path, data, mode)
        entry = self.index.get(path)
        assert entry is not None
        self.memory[entry.node] = data


def plan(
    image: Image, source: RegistryClient, flat: str, chain: str | None, limits: Limits, log: Log
) -> Plan:
    """The first pass: the flat's index (and with `chain`, its snapshot below the last layer), no
    contents hashed yet, every layer judged; nothing is written. Two layers are read at a time (the
    reading and inflating release the GIL), and applied in order as they are ready."""
    index = Index()
    tree = _Planning(index, limits)
    mtimes: dict[str, tuple[float, Entry]] = {}
    node_times: dict[int, float] = {}
    sources: dict[int, Source] = {}
    planned: list[PlannedTree] = []

    def read(layer: Layer) -> list[tarfile.TarInfo]:
        with source.blob(image.repository, layer.digest) as blob:
            return read_members(blob, layer.digest, limits)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="layer-read") as pool:
        reading = [pool.submit(read, layer) for layer in image.layers]
        try:
            for number, (layer, members) in enumerate(zip(image.layers, reading, strict=True)):
                if chain is not None and number == len(image.layers) - 1:
                    planned.append(PlannedTree(chain, index.copy(), dict(mtimes), dict(node_times)))

                def made(member: tarfile.TarInfo, path: str, number: int = number) -> None:
                    entry = index.get(path)
                    assert entry is not None
                    if member.isreg():
                        sources[entry.node] = (number, member.offset_data)
                        node_times[entry.node] = member.mtime
                    elif entry.kind in (DIR, SYMLINK):
                        mtimes[path] = (member.mtime, entry)

                log(f"reading layer {layer.digest} ({layer.size / 1e6:.1f} MB)")
                apply_members(tree, members.result(), layer.digest, made)
        finally:
            for each in reading:
                each.cancel()
    add_runtime_files(tree, image)
    for copy, node in tree.copied.items():  # in the order made: a copy of a copy finds its source set
        sources[copy] = sources[node]
        node_times[copy] = node_times[node]
    planned.insert(0, PlannedTree(flat, index, mtimes, node_times))
    return Plan(planned, tree.stats, sources, tree.memory)


class _TarOut:
    """A tar written to ingest's input: headers gathered, file data passed on as it comes."""

    def __init__(self, out: Writable) -> None:
        self.out = out
        self.pending = bytearray()

    def entry(
        self, name: str, kind: bytes, entry: Entry, mtime: float, size: int = 0, link: str = ""
    ) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid = kind, entry.mode, entry.uid, entry.gid
        info.mtime, info.size, info.linkname = int(mtime), size, link
        self.pending += info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if len(self.pending) >= 1 << 20:
            self.flush()

    def data(self, chunks: Iterable[bytes], size: int, name: str) -> str:
        """A file's bytes after its header, hashed; its sha256."""
        self.flush()
        digest, sent = hashlib.sha256(), 0
        for chunk in chunks:
            digest.update(chunk)
            sent += len(chunk)
            self.out.write(chunk)
        if sent != size:
            raise ToolError(f"/{name}: {sent} bytes read again where the first reading had {size}")
        self.pending += bytes(-size % tarfile.BLOCKSIZE)
        return digest.hexdigest()

    def flush(self) -> None:
        if self.pending:
            self.out.write(bytes(self.pending))
            self.pending.clear()

    def close(self) -> None:
        self.pending += bytes(2 * tarfile.BLOCKSIZE)
        self.flush()


def _name(rel: str, path: str) -> str:
    return f"{rel}/{path}" if path else rel


def send(
    plan: Plan, image: Image, source: RegistryClient, out: Writable, parents: list[str], log: Log
) -> None:
    """The second pass: the tar of `parents` (root, 0755) and the planned trees into `out`; each file's
    sha256 goes into its tree's index."""
    tar = _TarOut(out)
    for rel in parents:
        tar.entry(rel, tarfile.DIRTYPE, Entry(DIR, 0o755, 0, 0), 0)
    feeds: dict[Source, dict[Group, list[tuple[PlannedTree, str]]]] = {}
    for tree in plan.trees:
        for path, entry in tree.index.items():  # sorted: a directory before what is in it
            if entry.kind == FILE:
                key = plan.sources.get(entry.node) or (-1, entry.node)
                group = feeds.setdefault(key, {}).setdefault((entry.mode, entry.uid, entry.gid), [])
                group.append((tree, path))
                continue
            mtime, made = tree.mtimes.get(path, (0, None))
            mtime = mtime if made is entry else 0
            if entry.kind == DIR:
                tar.entry(_name(tree.rel, path), tarfile.DIRTYPE, entry, mtime)
            elif entry.kind == SYMLINK:
                tar.entry(_name(tree.rel, path), tarfile.SYMTYPE, entry, mtime, link=entry.target)
    for (layer, node), groups in list(feeds.items()):
        if layer == -1:
            _send_file(tar, groups, [plan.memory[node]])
            del feeds[(layer, node)]
    wanted = sorted({layer for layer, _ in feeds})
    for number in wanted:
        digest = image.layers[number].digest
        log(f"sending layer {digest} to ingest")
        with source.blob(image.repository, digest) as stream, open_layer(stream, digest) as archive:
            for member in archive.members():
                groups = feeds.pop((number, member.offset_data), {})
                if groups:
                    _send_file(tar, groups, archive.contents(member))
    for groups in feeds.values():
        _, path = next(iter(groups.values()))[0]
        raise ToolError(f"/{path}: its layer no longer holds it where the first reading found it")
    tar.close()


def _send_file(
    tar: _TarOut, groups: dict[Group, list[tuple[PlannedTree, str]]], chunks: Iterable[bytes]
) -> None:
    """One source's bytes under the first name of each group, its other names as hard links to it."""
    if len(groups) > 1:  # names of one content with different modes or owners: sent once per group
        with tempfile.SpooledTemporaryFile(_SPOOL) as spool:
            for chunk in chunks:
                spool.write(chunk)
            for names in groups.values():
                spool.seek(0)
                _send_group(tar, names, iter(lambda: spool.read(1 << 20), b""))
        return
    _send_group(tar, next(iter(groups.values())), chunks)


def _send_group(tar: _TarOut, names: list[tuple[PlannedTree, str]], chunks: Iterable[bytes]) -> None:
    first_tree, first = names[0]
    entry = first_tree.index.entries[first]
    name = _name(first_tree.rel, first)
    mtime = first_tree.node_times.get(entry.node, 0)
    tar.entry(name, tarfile.REGTYPE, entry, mtime, size=entry.size)
    sha256 = tar.data(chunks, entry.size, name)
    for tree, path in names:
        tree.index.entries[path] = replace(tree.index.entries[path], sha256=sha256)
    for tree, path in names[1:]:
        tar.entry(_name(tree.rel, path), tarfile.LNKTYPE, entry, mtime, link=name)

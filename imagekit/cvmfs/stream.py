"""A whole new flat, and the snapshot of it below its last layer (its chain), as one tar stream for
`cvmfs_server ingest`: nothing of it is written to disk first, and ingest takes it as it is read.

The layers are read once, top layer first (`stream`): what no layer above takes or hides is sent as it
comes by, so ingest works from the first second. Every header is kept, and after the bottom layer the
plan applies them in order with the same `Tree` and checks as a flat on disk (whiteouts, opaque
directories, hard links, every refusal and limit); the tar is ended only when what was sent is exactly
what the plan has, so ingest never publishes anything else.

Where the top-down order cannot send an image as planned (a hard link that changes a lower file's mode,
a name twice in one layer), the plan is sent by a second reading (`send`) into a fresh ingest: the
directories and symlinks from the index first, then each file's bytes as its member comes by, each
other name of the same contents as a hard link, which ingest clones.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import IO

from imagekit.cvmfs.flatten import (
    OPAQUE,
    WHITEOUT,
    Limits,
    Stats,
    TarStream,
    Tree,
    UnsafeLayer,
    Writable,
    apply_members,
    components,
    open_layer,
)
from imagekit.cvmfs.index import DIR, FILE, SYMLINK, Entry, Index
from imagekit.cvmfs.layout import add_runtime_files
from imagekit.cvmfs.source import Image
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
    """The index alone; the bytes of the files made from memory are kept (sent after the layers')."""

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
    image: Image, flat: str, chain: str | None, limits: Limits, layers: Iterable[list[tarfile.TarInfo]]
) -> Plan:
    """The flat's index (and with `chain`, its snapshot below the last layer) from the layers' members,
    bottom layer first, applied to an index alone with every check of a flat on disk: a refusal raises.
    No contents are hashed yet; each file's source (layer, member) is noted for sending."""
    index = Index()
    tree = _Planning(index, limits)
    mtimes: dict[str, tuple[float, Entry]] = {}
    node_times: dict[int, float] = {}
    sources: dict[int, Source] = {}
    planned: list[PlannedTree] = []
    for number, (layer, members) in enumerate(zip(image.layers, layers, strict=True)):
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

        apply_members(tree, members, layer.digest, made)
    add_runtime_files(tree, image)
    for copy, node in tree.copied.items():  # in the order made: a copy of a copy finds its source set
        sources[copy] = sources[node]
        node_times[copy] = node_times[node]
    planned.insert(0, PlannedTree(flat, index, mtimes, node_times))
    return Plan(planned, tree.stats, sources, tree.memory)


class ReadAgain(Exception):
    """The one reading (`stream`) could not send this image as its plan has it: what it sent is to be
    thrown away (ingest stopped, its transaction aborted) and the plan sent by `send`."""

    def __init__(self, plan: Plan, why: str) -> None:
        super().__init__(why)
        self.plan = plan
        self.why = why


@dataclass
class _View:
    """One planned tree (the flat, or its chain snapshot) as the layers above the one being read leave
    it: the top layer is read first, so a name the layers above made, deleted, or hid below an opaque
    directory or a non-directory is not this layer's to give."""

    rel: str
    made: dict[str, bool] = field(default_factory=dict)
    """Path → whether it is a directory, for every name a layer above made."""
    gone: set[str] = field(default_factory=set)
    opaque: set[str] = field(default_factory=set)
    sent_dirs: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    """Directories already in the stream (mode, uid, gid, mtime): ingest takes a directory's metadata
    from its first entry, so nothing may be sent below one before it."""
    layer_made: dict[str, bool] = field(default_factory=dict)
    layer_gone: set[str] = field(default_factory=set)
    layer_opaque: set[str] = field(default_factory=set)

    def shows(self, parts: list[str]) -> bool:
        """Whether this layer's entry of `parts` is the tree's (no layer above took the name or hid it)."""
        path = ""
        for part in parts[:-1]:
            path = f"{path}/{part}" if path else part
            if path in self.gone or path in self.opaque or self.made.get(path) is False:
                return False
        path = f"{path}/{parts[-1]}" if path else parts[-1]
        return path not in self.gone and path not in self.made

    def finish_layer(self) -> None:
        for path, is_dir in self.layer_made.items():
            self.made.setdefault(path, is_dir)
        self.gone |= self.layer_gone
        self.opaque |= self.layer_opaque
        self.layer_made, self.layer_gone, self.layer_opaque = {}, set(), set()


@dataclass(frozen=True)
class _Sent:
    """A file's bytes as the one reading took them: under which name, with what header; `held` is where
    they wait in the spool (offset) when they came before their directory."""

    rel: str
    path: str
    group: Group
    mtime: int
    size: int
    sha256: str
    held: int | None = None


OTHER_NAMES = "the layers give its contents other names or modes"
HOLD_LIMIT = 256 << 20
"""The most file bytes the one reading keeps aside for files that come before their directory (layers
that do not carry their parents' entries); past it the image is read twice instead."""


def stream(
    image: Image,
    source: RegistryClient,
    flat: str,
    chain: str | None,
    limits: Limits,
    out: Writable,
    parents: list[str],
    log: Log,
) -> Plan:
    """The flat (and its chain snapshot) sent as the layers are read once, top layer first: a directory
    or file no layer above takes or hides goes into the stream as it comes by, hashed as it passes (a
    file whose directory a lower layer makes waits in a spool). Every member's header is kept; after the
    bottom layer `plan` applies them in order with all the checks of a flat on disk (a refusal
    raises, and the stream never ends), and the stream is ended only if what was sent is exactly what
    the plan has, the rest (symlinks, hard links, directories not sent yet, imagekit's own files) after
    it. Otherwise `ReadAgain`, with the plan (an entry the bottom-up order decides differently)."""
    with tempfile.SpooledTemporaryFile(_SPOOL) as spool:
        reading = _OneReading(_TarOut(out), spool, flat, chain)
        reading.start(parents)
        members: list[list[tarfile.TarInfo]] = [[] for _ in image.layers]
        top = len(image.layers) - 1
        for number in range(top, -1, -1):
            digest = image.layers[number].digest
            log(f"streaming layer {digest} ({image.layers[number].size / 1e6:.1f} MB) into ingest")
            with source.blob(image.repository, digest) as blob, open_layer(blob, digest) as layer_tar:
                members[number] = reading.read(layer_tar, number, limits, top=number == top)
        planned = plan(image, flat, chain, limits, members)
        why = reading.stopped or reading.finish(planned)
    if why:
        raise ReadAgain(planned, why)
    return planned


class _OneReading:
    """What `stream` sent and keeps: the views of the planned trees, the files sent, the spool."""

    def __init__(self, tar: _TarOut, spool: IO[bytes], flat: str, chain: str | None) -> None:
        self.tar = tar
        self.spool = spool
        self.views = [_View(flat), *([_View(chain)] if chain is not None else [])]
        self.sent: dict[Source, _Sent] = {}
        self.entries = self.size = 0
        self.stopped = ""
        """Why the one reading cannot send this image as planned (it reads on, for the plan)."""

    def start(self, parents: list[str]) -> None:
        root = Entry(DIR, 0o755, 0, 0)
        for rel in [*parents, *(view.rel for view in self.views)]:
            self.tar.entry(rel, tarfile.DIRTYPE, root, 0)
        for view in self.views:
            view.sent_dirs[""] = (root.mode, root.uid, root.gid, 0)

    def read(self, layer_tar: TarStream, number: int, limits: Limits, *, top: bool) -> list[tarfile.TarInfo]:
        """A layer's members, what of them the trees have sent; the image's entries and file bytes
        counted against `limits` as they come (nothing past them is sent)."""
        members = []
        for member in layer_tar.members():
            members.append(member)
            self.entries += 1
            self.size += member.size if member.isreg() else 0
            if self.entries > limits.max_entries:
                raise limits.too_many(layer_tar.layer)
            if self.size > limits.max_bytes:
                raise limits.too_large(layer_tar.layer, member.name)
            self.take(member, number, layer_tar, top=top)
        for view in self.views:
            view.finish_layer()
        return members

    def take(self, member: tarfile.TarInfo, number: int, archive: TarStream, *, top: bool) -> None:
        """Send what of `member` the trees have (see `stream`)."""
        if self.stopped:
            return
        try:
            parts = components(member.name, archive.layer)
        except UnsafeLayer:
            self.stopped = f"layer {archive.layer}: '{member.name}' is not a name of the tree"
            return
        if not parts:
            return
        live = self.views[:1] if top else self.views  # the top layer is not in the chain snapshot
        parent, base = "/".join(parts[:-1]), parts[-1]
        if base.startswith(WHITEOUT):
            for view in live:
                if base == OPAQUE:
                    view.layer_opaque.add(parent)
                elif not base.startswith(WHITEOUT + WHITEOUT):
                    view.layer_gone.add("/".join([*parts[:-1], base[len(WHITEOUT) :]]))
            return
        if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
            return  # skipped by the plan too (device nodes, FIFOs): it hides nothing below
        path = "/".join(parts)
        shown = [view for view in live if view.shows(parts)]
        for view in live:
            view.layer_made.setdefault(path, member.isdir())
        meta = (member.mode & 0o7777, member.uid, member.gid)
        if member.isdir():
            for view in shown:
                if parent in view.sent_dirs:  # else it goes after the plan, as what is in it does
                    self.tar.entry(_name(view.rel, path), tarfile.DIRTYPE, Entry(DIR, *meta), member.mtime)
                    view.sent_dirs[path] = (*meta, int(member.mtime))
        elif member.isreg() and shown:  # a file's other names, and symlinks, go after the plan
            view = shown[0]
            name = _name(view.rel, path)
            if parent in view.sent_dirs:
                self.tar.entry(name, tarfile.REGTYPE, Entry(FILE, *meta), member.mtime, size=member.size)
                sha256, held = self.tar.data(archive.contents(member), member.size, name), None
            elif self.spool.tell() + member.size > HOLD_LIMIT:
                self.stopped = f"more than {HOLD_LIMIT} bytes of files come before their directories"
                return
            else:
                held = self.spool.tell()
                sha256 = _hold(self.spool, archive.contents(member))
            file = _Sent(view.rel, path, meta, int(member.mtime), member.size, sha256, held)
            self.sent[(number, member.offset_data)] = file

    def finish(self, planned: Plan) -> str:
        """Why what was sent is not the plan's, or "" once the rest is sent too and the tar ended."""
        trees = {tree.rel: tree for tree in planned.trees}
        for view in self.views:
            tree = trees[view.rel]
            for path, sent_dir in view.sent_dirs.items():
                entry = tree.index.get(path)
                made = (*_group(entry), _time(tree, path, entry)) if entry and entry.kind == DIR else None
                if made != sent_dir:
                    return f"/{_name(view.rel, path)}: the layers make another directory than the one sent"
        feeds = _feeds(planned)
        sent: list[tuple[_Sent, list[tuple[PlannedTree, str]]]] = []
        for key, file in self.sent.items():
            tree = trees[file.rel]
            groups = feeds.pop(key, {})
            names = groups.get(file.group, [])
            entry = tree.index.get(file.path)
            if len(groups) != 1 or (tree, file.path) not in names or entry is None:
                return f"/{_name(file.rel, file.path)}: {OTHER_NAMES}"
            if tree.node_times.get(entry.node, 0) != file.mtime:
                return f"/{_name(file.rel, file.path)}: the layers give it another time"
            sent.append((file, names))
        for (layer, _), groups in feeds.items():
            if layer != -1:
                tree, path = next(iter(groups.values()))[0]
                return f"/{_name(tree.rel, path)}: its contents are a lower layer's that the reading passed"
        for file, names in sent:  # the plan is sent as it is: its indexes take the hashes
            for tree, path in names:
                tree.index.entries[path] = replace(tree.index.entries[path], sha256=file.sha256)
        for view in self.views:  # the flat, then the chain snapshot, as the plan's trees
            _send_entries(self.tar, trees[view.rel], skip=view.sent_dirs)
        for (_, node), groups in feeds.items():
            _send_file(self.tar, groups, [planned.memory[node]])
        for file, _ in sent:
            if file.held is not None:
                name = _name(file.rel, file.path)
                self.tar.entry(name, tarfile.REGTYPE, Entry(FILE, *file.group), file.mtime, size=file.size)
                self.spool.seek(file.held)
                self.tar.data(_read_back(self.spool, file.size), file.size, name)
        for file, names in sent:
            name = _name(file.rel, file.path)
            for tree, path in names:
                if _name(tree.rel, path) != name:
                    entry = tree.index.entries[path]
                    self.tar.entry(_name(tree.rel, path), tarfile.LNKTYPE, entry, file.mtime, link=name)
        self.tar.close()
        return ""


def _group(entry: Entry) -> Group:
    return entry.mode, entry.uid, entry.gid


def _hold(spool: IO[bytes], chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
        spool.write(chunk)
    return digest.hexdigest()


def _read_back(spool: IO[bytes], size: int) -> Iterator[bytes]:
    while size > 0:
        chunk = spool.read(min(size, 1 << 20))
        if not chunk:
            raise ToolError("the spool of held files ended early")
        size -= len(chunk)
        yield chunk


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
            raise ToolError(f"/{name}: {sent} bytes read where its header said {size}")
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
    """The second reading: the tar of `parents` (root, 0755) and the planned trees into `out`; each
    file's sha256 goes into its tree's index."""
    tar = _TarOut(out)
    for rel in parents:
        tar.entry(rel, tarfile.DIRTYPE, Entry(DIR, 0o755, 0, 0), 0)
    for tree in plan.trees:
        _send_entries(tar, tree, skip={})
    feeds = _feeds(plan)
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
        raise ToolError(f"/{path}: its layer no longer holds it where the one reading found it")
    tar.close()


def _time(tree: PlannedTree, path: str, entry: Entry) -> int:
    """A directory's or symlink's time as sent: its member's, unless a later entry replaced it."""
    mtime, made = tree.mtimes.get(path, (0, None))
    return int(mtime) if made is entry else 0


def _send_entries(tar: _TarOut, tree: PlannedTree, skip: Container[str]) -> None:
    """A tree's directories (but those in `skip`, already sent) and symlinks, a directory before what
    is in it."""
    for path, entry in tree.index.items():  # sorted: a directory before what is in it
        if entry.kind == DIR and path not in skip:
            tar.entry(_name(tree.rel, path), tarfile.DIRTYPE, entry, _time(tree, path, entry))
        elif entry.kind == SYMLINK:
            tar.entry(
                _name(tree.rel, path), tarfile.SYMTYPE, entry, _time(tree, path, entry), link=entry.target
            )


def _feeds(plan: Plan) -> dict[Source, dict[Group, list[tuple[PlannedTree, str]]]]:
    """Every file's names by source (its contents), then by mode and owner."""
    feeds: dict[Source, dict[Group, list[tuple[PlannedTree, str]]]] = {}
    for tree in plan.trees:
        for path, entry in tree.index.items():
            if entry.kind == FILE:
                key = plan.sources.get(entry.node) or (-1, entry.node)
                feeds.setdefault(key, {}).setdefault(_group(entry), []).append((tree, path))
    return feeds


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

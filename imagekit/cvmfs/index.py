"""What a flattened tree must contain: one entry per path, derived from the layers, never from the disk.

The index is both the flattener's model of the tree (its safety checks read it, so the same code can
simulate layers without writing) and the reference `verify` compares the disk against. Hard links
share a `node`, so a change of an inode's metadata reaches every name of it, as on disk.
"""

from __future__ import annotations

import gc
import gzip
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

FILE, DIR, SYMLINK = "f", "d", "l"
OVERLAY_WHITEOUT = "w"
"""An overlayfs whiteout (character device 0/0): in a `.layers` tree, a name the layer deletes."""
OPAQUE_XATTR = "trusted.overlay.opaque"


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str
    mode: int
    """Permission bits with setuid/setgid/sticky (`mode & 0o7777`)."""
    uid: int
    gid: int
    size: int = 0
    sha256: str = ""
    target: str = ""
    """A symlink's target, as stored (never resolved)."""
    node: int = 0
    """Files with the same node are hard links of one another."""
    opaque: bool = False
    """A `.layers` directory that hides the lower layers' (xattr trusted.overlay.opaque=y)."""


class Index:
    """Path → Entry for one tree ("" is its root), with each directory's children for subtree removal."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {"": Entry(DIR, 0o755, 0, 0)}
        self.children: dict[str, set[str]] = {"": set()}
        self.changed: set[str] = set()
        """Paths put since the index was made or loaded: what an incremental publish has to check."""
        self._next_node = 1
        self._lines: dict[str, tuple[Entry, str]] = {}
        """Each loaded entry with its line as read: `dumps` writes it again unless the entry was replaced."""

    def new_node(self) -> int:
        self._next_node += 1
        return self._next_node

    def get(self, path: str) -> Entry | None:
        return self.entries.get(path)

    def put(self, path: str, entry: Entry) -> None:
        parent, _, name = path.rpartition("/")
        self.children[parent].add(name)
        self.entries[path] = entry
        self.changed.add(path)
        if entry.kind == DIR:
            self.children.setdefault(path, set())
        else:
            self.children.pop(path, None)
        self._next_node = max(self._next_node, entry.node)

    def remove(self, path: str) -> None:
        """Forget `path` and everything below it."""
        if path not in self.entries:
            return
        for name in list(self.children.get(path, ())):
            self.remove(f"{path}/{name}" if path else name)
        self.children.pop(path, None)
        del self.entries[path]
        parent, _, name = path.rpartition("/")
        self.children[parent].discard(name)

    def copy(self) -> Index:
        """The same entries in an index of its own: what either is given afterwards stays its own."""
        copy = Index()
        copy.entries = dict(self.entries)
        copy.children = {path: set(names) for path, names in self.children.items()}
        copy._next_node = self._next_node
        copy._lines = dict(self._lines)
        return copy

    def list_dir(self, path: str) -> list[str]:
        return sorted(self.children.get(path, ()))

    def set_node_metadata(self, node: int, mode: int, uid: int, gid: int) -> None:
        """chmod/chown of an inode: every hard link of it changes."""
        for path, entry in self.entries.items():
            if entry.kind == FILE and entry.node == node:
                self.entries[path] = replace(entry, mode=mode, uid=uid, gid=gid)
                self.changed.add(path)

    def __len__(self) -> int:
        return len(self.entries)

    def items(self) -> Iterator[tuple[str, Entry]]:
        return iter(sorted(self.entries.items()))

    def dumps(self) -> bytes:
        """gzip'd JSON lines, one entry a line, by path; a loaded entry's line is the one read (the same
        bytes: `dumps` wrote it), so a code-only version serialises only what its layers changed."""
        entries, kept = self.entries, self._lines
        lines = []
        for name in sorted(entries):
            e = entries[name]
            line = kept.get(name)
            lines.append(line[1] if line is not None and line[0] is e else _line(name, e))
        return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=3, mtime=0)

    @classmethod
    def load(cls, path: Path) -> Index:
        """The index `dumps` wrote to `path`."""
        return cls.loads(path.read_bytes())

    @classmethod
    def loads(cls, data: bytes) -> Index:
        """The index `dumps` made. A code-only version parses its ~10,000 entries while its transaction
        opens and its copy is linked, sharing the GIL with that: `put` is inlined (its lines come sorted,
        parents first), and the cyclic GC is paused meanwhile (entries hold no cycles; its passes over
        them cost more than the parsing, ~30 ms now and then)."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            return cls._parse(gzip.decompress(data).decode("utf-8").rstrip("\n"))
        finally:
            if collecting:
                gc.enable()

    @classmethod
    def _parse(cls, text: str) -> Index:
        index = cls()
        entries, children, kept = index.entries, index.children, index._lines
        # one parse for all lines (JSON escapes every newline inside a string): ten times faster
        records = json.loads(f"[{text.replace(chr(10), ',')}]")
        for (name, kind, mode, uid, gid, size, sha, target, node, *rest), line in zip(
            records, text.split("\n"), strict=True
        ):
            opaque = bool(rest and rest[0])
            if name == "":
                entries[""] = Entry(kind, mode, uid, gid, opaque=opaque)
                continue
            parent, _, base = name.rpartition("/")
            children[parent].add(base)
            entry = entries[name] = Entry(kind, mode, uid, gid, size, sha, target, node, opaque)
            if kind == DIR:
                children.setdefault(name, set())
            else:
                children.pop(name, None)
            if len(rest) == 1:  # a line without the `opaque` field is written anew, with it
                kept[name] = (entry, line)
        index._next_node = max(index._next_node, max((each.node for each in entries.values()), default=0))
        return index


def _line(name: str, e: Entry) -> str:
    return json.dumps([name, e.kind, e.mode, e.uid, e.gid, e.size, e.sha256, e.target, e.node, int(e.opaque)])


def entry_kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISCHR(mode) and st.st_rdev == 0:
        return OVERLAY_WHITEOUT
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    if stat.S_ISREG(mode):
        return FILE
    return "?"

"""What a flattened tree must contain: one entry per path, derived from the layers, never from the disk.

The index is both the flattener's model of the tree (its safety checks read it, so the same code can
simulate layers without writing) and the reference `verify` compares the disk against. Hard links
share a `node`, so a change of an inode's metadata reaches every name of it, as on disk.
"""

from __future__ import annotations

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
        """gzip'd JSON lines, one entry a line."""
        lines = (
            json.dumps(
                [name, e.kind, e.mode, e.uid, e.gid, e.size, e.sha256, e.target, e.node, int(e.opaque)]
            )
            for name, e in self.items()
        )
        return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=3, mtime=0)

    @classmethod
    def load(cls, path: Path) -> Index:
        index = cls()
        text = gzip.decompress(path.read_bytes()).decode("utf-8").rstrip("\n")
        # one parse for all lines (JSON escapes every newline inside a string): ten times faster
        for name, kind, mode, uid, gid, size, sha, target, node, *rest in json.loads(
            f"[{text.replace(chr(10), ',')}]"
        ):
            opaque = bool(rest and rest[0])
            if name == "":
                index.entries[""] = Entry(kind, mode, uid, gid, opaque=opaque)
                continue
            index.put(name, Entry(kind, mode, uid, gid, size, sha, target, node, opaque))
        index.changed.clear()
        return index


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

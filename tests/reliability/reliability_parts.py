"""What the reliability cases share: a directory's digest and the record of one case."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path


def tree_digest(root: Path, *, skip: tuple[Path, ...] = ()) -> str:
    """Names, types, modes, owners, sizes, link targets and contents below `root` (never following links)."""
    digest = hashlib.sha256()
    skipped = {str(path) for path in skip}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) not in skipped)
        for name in sorted([*dirnames, *filenames]):
            full = os.path.join(dirpath, name)
            if full in skipped:
                continue
            st = os.lstat(full)
            digest.update(f"{full}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(full).encode())
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Case:
    """One reliability case: how many examples it tried, and what it lost."""

    examples: int = 0
    losses: list[str] = field(default_factory=list)
    guarded: list[tuple[Path, tuple[Path, ...], str]] = field(default_factory=list)

    def tried(self) -> None:
        self.examples += 1

    def lost(self, what: str) -> None:
        self.losses.append(what)

    def guard(self, root: Path, *, skip: tuple[Path, ...] = ()) -> None:
        """Nothing below `root` (but `skip`, the target) may change during the test."""
        self.guarded.append((root, skip, tree_digest(root, skip=skip)))

    def check_guards(self) -> None:
        for root, skip, before in self.guarded:
            if root.exists() and tree_digest(root, skip=skip) != before:
                self.lost(f"something outside the target was written below {root}")
        self.guarded.clear()

"""Compare a tree on disk with its index: every entry's type, mode, owner, size, content hash, link target.

DUCC has shipped flats with missing executables (cvmfs#3407) and lost `.singularity.d` after a GC
(cvmfs#4208); this check runs before a publication is marked complete, and on demand. A file that is
the very inode of an already verified tree (a hard-link copy) is not read again.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from imagekit.cvmfs.index import DIR, FILE, OPAQUE_XATTR, OVERLAY_WHITEOUT, SYMLINK, Entry, Index, entry_kind

CHUNK = 1 << 20
_KIND_NAMES = {
    FILE: "file",
    DIR: "directory",
    SYMLINK: "symlink",
    OVERLAY_WHITEOUT: "whiteout",
    "?": "special file",
}


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def compare(
    index: Index,
    root: Path,
    *,
    trusted: Path | None = None,
    changed: set[str] | None = None,
    limit: int = 20,
) -> list[str]:
    """What differs between `root` and `index` (at most `limit` lines); [] when they agree.

    `trusted` is a verified tree `root` is a hard-link copy of: a file that is its very inode is not
    read again. With `changed` too (the paths the new layers wrote), any other file or symlink that is
    the very inode of `trusted`'s, as the directory listings say, is not looked at on its own:
    a code-only version checks its new entries and every directory, not the whole base again.
    Contents are hashed by a few threads (reading and hashing release the GIL).
    """
    problems: list[str] = []
    to_hash: list[tuple[str, str, str]] = []
    listings: dict[str, dict[str, int]] = {}
    looked: dict[str, os.stat_result] = {}
    base = str(root)

    def problem(text: str) -> bool:
        problems.append(text)
        return len(problems) >= limit

    items: Iterable[tuple[str, Entry]]
    if trusted is not None and changed is not None:
        items = _clone_suspects(index, root, trusted, changed, listings, looked)
    else:
        items = index.items()
    for path, want in items:
        full = os.path.join(base, path) if path else base
        try:
            st = looked.pop(path, None) or os.lstat(full)
        except FileNotFoundError:
            if problem(f"/{path}: missing ({_KIND_NAMES[want.kind]} expected)"):
                break
            continue
        kind = entry_kind(st)
        if kind != want.kind:
            if problem(f"/{path}: is a {_KIND_NAMES[kind]}, expected a {_KIND_NAMES[want.kind]}"):
                break
            continue
        found: list[str] = []
        if path and kind != SYMLINK and stat.S_IMODE(st.st_mode) != want.mode:
            found.append(f"mode {oct(stat.S_IMODE(st.st_mode))}, expected {oct(want.mode)}")
        if path and (st.st_uid, st.st_gid) != (want.uid, want.gid):
            found.append(f"owner {st.st_uid}:{st.st_gid}, expected {want.uid}:{want.gid}")
        if kind == SYMLINK and os.readlink(full) != want.target:
            found.append(f"points to {os.readlink(full)!r}, expected {want.target!r}")
        if kind == FILE:
            if st.st_size != want.size:
                found.append(f"size {st.st_size}, expected {want.size}")
            elif not _same_inode(st, trusted, path):
                to_hash.append((path, full, want.sha256))
        if kind == DIR and want.opaque and not _opaque(full):
            found.append(f"not marked opaque ({OPAQUE_XATTR})")
        if kind == DIR:
            listing = _listing(root, path, listings)
            extra = sorted(set(listing) - index.children.get(path, set()))
            if extra:
                found.append(f"holds what the image does not: {', '.join(extra[:5])}")
        if found and problem(f"/{path}: " + "; ".join(found)):
            break
    if len(problems) < limit and to_hash:
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            digests = pool.map(file_sha256, [full for _, full, _ in to_hash])
            for (path, _, want_sha), digest in zip(to_hash, digests, strict=True):
                if digest != want_sha and problem(f"/{path}: content differs from the layers"):
                    break
    return problems


def _clone_suspects(
    index: Index,
    root: Path,
    trusted: Path,
    changed: set[str],
    listings: dict[str, dict[str, int]],
    looked: dict[str, os.stat_result],
) -> list[tuple[str, Entry]]:
    """The entries of a hard-link copy of `trusted` to look at on their own, by path: every directory,
    every changed path, and every other entry its directory's listing does not show as the very inode
    of `trusted`'s at the same place (that one is the verified tree's, which holds the same entry).
    A directory's listings are compared as sets, not entry by entry: ~10,000 entries in ~1,200
    directories leave a few dozen to look at. `listings` and `looked` get each directory's listing
    and lstat, where it is one."""
    new: dict[str, set[str]] = {}
    for path in changed:
        parent, _, name = path.rpartition("/")
        new.setdefault(parent, set()).add(name)
    base, other = str(root), str(trusted)
    suspects: set[str] = set()
    for path, names in index.children.items():
        suspects.add(path)
        look = new.get(path, set())
        full = f"{base}/{path}" if path else base
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):  # never listed through a symlink or a file
            look = look | names
        else:
            looked[path] = st
            ours = listings[path] = _list_inodes(full)
            theirs = _list_inodes(f"{other}/{path}" if path else other)
            look = look | (names - ours.keys()) | {name for name, _ in ours.items() - theirs.items()}
        suspects.update(f"{path}/{name}" if path else name for name in look)
    entries = index.entries
    return sorted((path, entries[path]) for path in suspects if path in entries)


def _list_inodes(path: str) -> dict[str, int]:
    try:
        with os.scandir(path) as entries:
            return {entry.name: entry.inode() for entry in entries}
    except (NotADirectoryError, FileNotFoundError):
        return {}


def _listing(root: Path, path: str, cache: dict[str, dict[str, int]]) -> dict[str, int]:
    """Name → inode number of a directory's entries, from the listing alone ({} if it is none)."""
    if path not in cache:
        cache[path] = _list_inodes(os.path.join(root, path) if path else str(root))
    return cache[path]


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _same_inode(st: os.stat_result, trusted: Path | None, path: str) -> bool:
    if trusted is None:
        return False
    try:
        other = os.lstat(os.path.join(trusted, path))
    except OSError:
        return False
    return (other.st_ino, other.st_dev) == (st.st_ino, st.st_dev)


def compare_structure(
    index: Index, root: Path, *, full: set[str] | None = None, cloned: bool = False, limit: int = 20
) -> list[str]:
    """What differs between `root` and `index` in structure alone (at most `limit` lines): every entry
    present and none extra, type, mode, owner, size, link target; contents are hashed only for the
    files in `full`. `cloned`: only the entries in `full` are looked up on their own, every other one
    by its directory's listing (name and type): the clone of a verified flat's catalog entries, which
    the listings show complete and untouched in type (see `cloned_listings`).

    For a tree a content-addressed store landed (`cvmfs_server ingest` of a streamed flat, hashed as
    it was sent, or the catalog-level clone of a published flat under the entries the new layers
    wrote): CVMFS checks every object against its catalog hash when a client reads it,
    so reading the contents back through its FUSE mount would only check what it checks itself, at the
    cost of reading the whole image. `imagekit cvmfs verify` keeps checking contents (`compare`).
    The entries are looked up by a few threads: each lookup through FUSE waits on the file system.
    """
    problems: list[str] = cloned_listings(index, root, limit) if cloned else []
    if len(problems) >= limit:
        return problems
    to_hash: list[tuple[str, str, str]] = []
    base = str(root)
    items = [each for each in index.items() if not cloned or each[0] in (full or ())]
    if not items:
        return problems
    step = max(1, len(items) // 64)
    chunks = [[path for path, _ in items[n : n + step]] for n in range(0, len(items), step)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        looked = [each for chunk in pool.map(_look_up, [base] * len(chunks), chunks) for each in chunk]
    for (path, want), (st, target, listing) in zip(items, looked, strict=True):
        full_path = os.path.join(base, path) if path else base
        if st is None:
            problems.append(f"/{path}: missing ({_KIND_NAMES[want.kind]} expected)")
            if len(problems) >= limit:
                return problems
            continue
        kind = entry_kind(st)
        found: list[str] = []
        if kind != want.kind:
            found.append(f"is a {_KIND_NAMES[kind]}, expected a {_KIND_NAMES[want.kind]}")
        else:
            if path and kind != SYMLINK and stat.S_IMODE(st.st_mode) != want.mode:
                found.append(f"mode {oct(stat.S_IMODE(st.st_mode))}, expected {oct(want.mode)}")
            if path and (st.st_uid, st.st_gid) != (want.uid, want.gid):
                found.append(f"owner {st.st_uid}:{st.st_gid}, expected {want.uid}:{want.gid}")
            if kind == SYMLINK and target != want.target:
                found.append(f"points to {target!r}, expected {want.target!r}")
            if kind == FILE and st.st_size != want.size:
                found.append(f"size {st.st_size}, expected {want.size}")
            elif kind == FILE and full is not None and path in full:
                to_hash.append((path, full_path, want.sha256))
            if kind == DIR and want.opaque and not _opaque(full_path):
                found.append(f"not marked opaque ({OPAQUE_XATTR})")
            if kind == DIR and not cloned:  # else its listing was compared already
                extra = sorted(set(listing or ()) - index.children.get(path, set()))
                if extra:
                    found.append(f"holds what the image does not: {', '.join(extra[:5])}")
        if found:
            problems.append(f"/{path}: " + "; ".join(found))
            if len(problems) >= limit:
                return problems
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        digests = pool.map(file_sha256, [each for _, each, _ in to_hash])
        for (path, _, want_sha), digest in zip(to_hash, digests, strict=True):
            if digest != want_sha:
                problems.append(f"/{path}: content differs from the layers")
                if len(problems) >= limit:
                    break
    return problems


def _look_up(base: str, paths: list[str]) -> list[tuple[os.stat_result | None, str, list[str]]]:
    """Each path's lstat (None when missing), with its link target or its directory's listing."""
    found: list[tuple[os.stat_result | None, str, list[str]]] = []
    for path in paths:
        full_path = os.path.join(base, path) if path else base
        try:
            st = os.lstat(full_path)
        except FileNotFoundError:
            found.append((None, "", []))
            continue
        target = os.readlink(full_path) if stat.S_ISLNK(st.st_mode) else ""
        found.append((st, target, os.listdir(full_path) if stat.S_ISDIR(st.st_mode) else []))
    return found


def cloned_listings(index: Index, root: Path, limit: int = 20) -> list[str]:
    """Every directory of `index` listed under `root`: names missing or extra, and each entry's type as
    the listing gives it (d_type; an entry it gives none for is looked up). Listing ~1,200 directories
    through a transaction's union mount takes a tenth of looking up each of ~10,600 entries."""
    dirs = [path for path, want in index.items() if want.kind == DIR]
    step = max(1, len(dirs) // 64)
    chunks = [dirs[n : n + step] for n in range(0, len(dirs), step)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        listed = [
            each for chunk in pool.map(_list_kinds, [str(root)] * len(chunks), chunks) for each in chunk
        ]
    problems: list[str] = []
    for path, kinds in zip(dirs, listed, strict=True):
        if kinds is None:
            problems.append(f"/{path}: missing (directory expected)")
            if len(problems) >= limit:
                break
            continue
        for name in sorted(index.children.get(path, set()) | set(kinds)):
            child = f"{path}/{name}" if path else name
            want = index.get(child)
            if want is None:
                found = "holds what the image does not"
            elif name not in kinds:
                found = f"missing ({_KIND_NAMES[want.kind]} expected)"
            elif kinds[name] != want.kind:
                found = f"is a {_KIND_NAMES[kinds[name]]}, expected a {_KIND_NAMES[want.kind]}"
            else:
                continue
            problems.append(f"/{child}: {found}")
            if len(problems) >= limit:
                return problems
    return problems


def _list_kinds(base: str, paths: list[str]) -> list[dict[str, str] | None]:
    """Each directory's entries, name → kind, from its listing (None when it is not a directory)."""
    found: list[dict[str, str] | None] = []
    for path in paths:
        try:
            with os.scandir(os.path.join(base, path) if path else base) as entries:
                found.append({entry.name: _entry_kind(entry) for entry in entries})
        except (FileNotFoundError, NotADirectoryError):
            found.append(None)
    return found


def _entry_kind(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return SYMLINK
    if entry.is_dir(follow_symlinks=False):
        return DIR
    if entry.is_file(follow_symlinks=False):
        return FILE
    return entry_kind(entry.stat(follow_symlinks=False))  # a whiteout or a special file

"""A code-only version's fast path gives nothing up: the threaded hard-link copy is what `cp -a --link`
makes (directory modes, owners, xattrs and times, nothing followed) and fails as the plain copy did,
the check of a clone finds what a full check finds, and an index loaded and changed is written with
the very bytes a freshly built one is."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from imagekit.cvmfs.backends import _link_copy
from imagekit.cvmfs.flatten import Tree, apply_layer
from imagekit.cvmfs.index import DIR, FILE, SYMLINK, Entry, Index
from imagekit.cvmfs.verify import compare
from imagekit.errors import ToolError

from .images import E, layer

ROOT = os.geteuid() == 0


def _cp_link(source: Path, target: Path) -> None:
    subprocess.run(["cp", "-a", "--link", "--no-target-directory", str(source), str(target)], check=True)


def _xattrs(path: Path) -> dict[str, bytes]:
    return {
        name: os.getxattr(path, name, follow_symlinks=False)
        for name in os.listxattr(path, follow_symlinks=False)
    }


def _rows(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under `root`: type and mode, owner, mtime, xattrs of directories, inode of others."""
    rows: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["", *dirnames, *filenames] if dirpath == str(root) else [*dirnames, *filenames]:
            path = Path(dirpath, name)
            st = os.lstat(path)
            is_dir = os.path.isdir(path) and not os.path.islink(path)
            rows[os.path.relpath(path, root)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                _xattrs(path) if is_dir else st.st_ino,
            )
    return rows


def _odd_tree(source: Path) -> None:
    """Directories of every kind the copy treats apart, wide enough to keep both threads busy."""
    source.mkdir()
    for a in range(12):
        for b in range(6):
            leaf = source / f"d{a}" / f"e{b}"
            leaf.mkdir(parents=True)
            (leaf / "file").write_text(f"{a}.{b}")
            os.link(leaf / "file", leaf / "again")
    (source / "outside").symlink_to("/etc")  # copied as the link, never followed
    (source / "d0" / "up").symlink_to("../d1")
    os.mkfifo(source / "fifo")
    os.chmod(source / "d1", 0o2775)
    os.chmod(source / "d2", 0o1777)
    os.setxattr(source / "d3", "user.note", b"kept")
    os.setxattr(source / "d3" / "e1", "user.other", b"deep")
    os.chmod(source / "d4" / "e0", 0o555)  # not writable, with entries: its mode is set last
    os.chmod(source / "d4", 0o500)
    if ROOT:
        os.chmod(source / "d5" / "e5", 0o000)
        os.chown(source / "d6", 1234, 4321)
        os.chown(source / "d6" / "e2", 0, 4321)
        os.setxattr(source / "d7", "trusted.overlay.opaque", b"y")
    for n, (dirpath, _, _) in enumerate(sorted(os.walk(source), reverse=True)):
        os.utime(dirpath, ns=(1_600_000_000_000_000_000 + n, 1_700_000_000_000_000_000 + n * 1000))


@pytest.mark.parametrize("setgid_parent", [False, True])
def test_link_copy_is_what_cp_makes_for_every_kind_of_directory(tmp_path: Path, setgid_parent: bool) -> None:
    source = tmp_path / "source"
    _odd_tree(source)
    parent = tmp_path / "staging"
    parent.mkdir()
    if setgid_parent:  # what a new directory inherits there is put right, as cp puts it right
        os.chmod(parent, 0o2755)
        if ROOT:
            os.chown(parent, 0, 777)
    before = _rows(source)
    _link_copy(source, parent / "ours")
    _cp_link(source, parent / "theirs")
    ours, theirs = _rows(parent / "ours"), _rows(parent / "theirs")
    if setgid_parent:  # cp leaves the setgid bit a new directory inherited; the copy is its source's
        theirs = {
            rel: (row[0] & ~(stat.S_ISGID & ~before[rel][0]), *row[1:]) if isinstance(row[4], dict) else row
            for rel, row in theirs.items()
        }
    assert ours == theirs
    assert {rel: row[:4] for rel, row in ours.items()} == {rel: row[:4] for rel, row in before.items()}
    assert _rows(source) == before, "the copy changed its source"
    assert os.readlink(parent / "ours" / "outside") == "/etc"
    assert os.lstat(parent / "ours" / "outside").st_ino == os.lstat(source / "outside").st_ino


def test_link_copy_into_an_existing_target_is_a_tool_error(tmp_path: Path) -> None:
    source = tmp_path / "source"
    _odd_tree(source)
    (tmp_path / "target").mkdir()
    with pytest.raises(ToolError) as refused:
        _link_copy(source, tmp_path / "target")
    assert refused.value.message.startswith(f"hard-link copy of {source} failed: [Errno 17] File exists")


@pytest.fixture
def small_tmpfs(tmp_path: Path, require_part: Callable[[str], None]) -> Iterator[Path]:
    """A tmpfs of 60 inodes: another file system than tmp_path's, and one that runs out."""
    target = tmp_path / "small"
    target.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=60", "tmpfs", str(target)], capture_output=True
    )
    if mounted.returncode != 0:
        require_part(f"cannot mount a small tmpfs (needs root): {mounted.stderr.decode().strip()}")
    yield target
    subprocess.run(["umount", str(target)], capture_output=True, check=False)


def test_link_copy_failing_in_a_thread_is_a_tool_error_naming_the_entry(
    tmp_path: Path, small_tmpfs: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "sub").mkdir()
    (source / "sub" / "file").write_text("x")
    with pytest.raises(ToolError) as refused:
        _link_copy(source, small_tmpfs / "copy")  # a hard link cannot cross file systems
    assert refused.value.message == (
        f"hard-link copy of {source} failed: [Errno {errno.EXDEV}] Invalid cross-device link: "
        f"'{source}/sub/file' -> '{small_tmpfs}/copy/sub/file'"
    )


def test_link_copy_out_of_space_propagates_as_it_is(small_tmpfs: Path) -> None:
    source = small_tmpfs / "source"
    for n in range(40):
        (source / f"d{n:02}").mkdir(parents=True)
    with pytest.raises(OSError) as full:
        _link_copy(source, small_tmpfs / "copy")
    assert full.value.errno == errno.ENOSPC and not isinstance(full.value, ToolError)


# --- the check of a clone ------------------------------------------------------------------------


def _base(tmp_path: Path) -> tuple[Path, Index]:
    base = tmp_path / "base"
    base.mkdir()
    tree = Tree(Index(), base)
    entries = [E("etc", "d", mode=0o755), E("etc/passwd", "f", "root:x:0:0\n"), E("bin", "d")]
    for n in range(30):
        entries += [
            E(f"lib/m{n}", "d"),
            E(f"lib/m{n}/a.so", "f", f"so {n}", 0o755),
            E(f"lib/m{n}/b", "l", "a.so"),
        ]
    entries += [
        E("lib", "d"),
        E("bin/sh", "f", "#!", 0o755),
        E("bin/bash", "h", "bin/sh"),
        E("usr/share", "d", mode=0o755),
    ]
    apply_layer(tree, io.BytesIO(layer(E("lib", "d"), E("usr", "d"), *entries)), "sha256:base")
    assert compare(tree.index, base) == []
    (tmp_path / "base.index.gz").write_bytes(tree.index.dumps())
    return base, tree.index


def _clone(tmp_path: Path) -> tuple[Index, Path, Path]:
    """A verified base, its hard-link copy, and a code layer applied to the copy."""
    base, _ = _base(tmp_path)
    work = tmp_path / "work"
    _link_copy(base, work)
    index = Index.load(tmp_path / "base.index.gz")
    tree = Tree(index, work)
    apply_layer(tree, io.BytesIO(layer(E("opt", "d"), E("opt/run", "f", "v2", 0o755))), "sha256:code")
    return index, base, work


def _replace(path: Path, data: bytes | None = None, mode: int | None = None) -> None:
    """The same entry as a new inode (a copy), optionally with other contents or mode."""
    st = os.lstat(path)
    content = path.read_bytes() if data is None else data
    path.unlink()
    path.write_bytes(content)
    os.chmod(path, st.st_mode & 0o7777 if mode is None else mode)


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing": (lambda w: (w / "lib/m7/a.so").unlink(), "/lib/m7/a.so: missing (file expected)"),
    "missing dir": (lambda w: shutil.rmtree(w / "lib/m3"), "/lib/m3: missing (directory expected)"),
    "extra": (
        lambda w: (w / "lib/m9/intruder").write_text(""),
        "/lib/m9: holds what the image does not: intruder",
    ),
    "extra at root": (lambda w: (w / "intruder").mkdir(), "/: holds what the image does not: intruder"),
    "other inode, other contents": (
        lambda w: _replace(w / "lib/m2/a.so", b"so X"),
        "/lib/m2/a.so: content differs from the layers",
    ),
    "other inode, wrong mode": (
        lambda w: _replace(w / "etc/passwd", mode=0o600),
        "/etc/passwd: mode 0o600, expected 0o644",
    ),
    "other inode, wrong size": (lambda w: _replace(w / "bin/sh", b"#!!"), "/bin/sh: size 3, expected 2"),
    "retargeted symlink": (
        lambda w: ((w / "lib/m4/b").unlink(), (w / "lib/m4/b").symlink_to("/etc/shadow")),
        "/lib/m4/b: points to '/etc/shadow', expected 'a.so'",
    ),
    "file for a symlink": (
        lambda w: ((w / "lib/m5/b").unlink(), (w / "lib/m5/b").write_text("")),
        "/lib/m5/b: is a file, expected a symlink",
    ),
    "dir mode": (lambda w: os.chmod(w / "usr/share", 0o700), "/usr/share: mode 0o700, expected 0o755"),
    "symlink for a dir": (
        lambda w: (shutil.rmtree(w / "lib/m6"), (w / "lib/m6").symlink_to("m5")),
        "/lib/m6: is a symlink, expected a directory",
    ),
    "new entry rewritten": (
        lambda w: _replace(w / "opt/run", b"v3"),
        "/opt/run: content differs from the layers",
    ),
    "new entry swapped for an old one": (
        lambda w: ((w / "opt/run").unlink(), os.link(w / "bin/sh", w / "opt/run")),
        "/opt/run: content differs from the layers",
    ),
    "two names swapped": (
        lambda w: (
            os.rename(w / "lib/m1/a.so", w / "lib/m1/tmp"),
            os.rename(w / "lib/m0/a.so", w / "lib/m1/a.so"),
            os.rename(w / "lib/m1/tmp", w / "lib/m0/a.so"),
        ),
        "/lib/m0/a.so: content differs from the layers",
    ),
}


def test_clean_clone_passes(tmp_path: Path) -> None:
    index, base, work = _clone(tmp_path)
    assert index.changed == {"opt", "opt/run"}
    assert compare(index, work, trusted=base, changed=index.changed) == []


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_clone_check_finds_what_the_full_check_finds(tmp_path: Path, damage: str) -> None:
    index, base, work = _clone(tmp_path)
    make, expected = DAMAGES[damage]
    make(work)
    full = compare(index, work)
    assert expected in full
    assert compare(index, work, trusted=base, changed=index.changed) == full
    for limit in (1, 2):
        assert compare(index, work, trusted=base, changed=index.changed, limit=limit) == full[:limit]


def test_clone_check_looks_at_a_changed_path_even_on_the_verified_inode(tmp_path: Path) -> None:
    """What the new layers recorded is checked against the disk, even where the disk still holds the
    base's very inode (a layer whose write did not happen)."""
    index, base, work = _clone(tmp_path)
    entry = index.get("etc/passwd")
    assert entry is not None
    index.put("etc/passwd", replace(entry, size=entry.size + 1, sha256="0" * 64))
    problem = f"/etc/passwd: size {entry.size}, expected {entry.size + 1}"
    assert compare(index, work, trusted=base, changed=index.changed) == [problem]


def test_clone_check_finds_many_problems_in_path_order(tmp_path: Path) -> None:
    index, base, work = _clone(tmp_path)
    for make, _ in DAMAGES.values():
        make(work)
    full = compare(index, work, limit=100)
    assert len(full) >= 10
    assert compare(index, work, trusted=base, changed=index.changed, limit=100) == full


# --- the index as written ------------------------------------------------------------------------


def _golden(index: Index) -> bytes:
    """The index file as imagekit has always written it: one JSON array a line, sorted by path."""
    lines = [
        json.dumps([name, e.kind, e.mode, e.uid, e.gid, e.size, e.sha256, e.target, e.node, int(e.opaque)])
        for name, e in sorted(index.entries.items())
    ]
    return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=3, mtime=0)


def _index() -> Index:
    index = Index()
    sha = hashlib.sha256(b"x").hexdigest()
    index.put("etc", Entry(DIR, 0o755, 0, 0))
    index.put('etc/naïve "quoted"\nline', Entry(FILE, 0o644, 0, 0, 1, sha, node=2))
    index.put("etc/hard", Entry(FILE, 0o644, 0, 0, 1, sha, node=2))
    index.put("etc/link", Entry(SYMLINK, 0o777, 0, 0, target="../ünïcode"))
    index.put("opaque", Entry(DIR, 0o700, 5, 6, opaque=True))
    index.put("opaque/x", Entry(FILE, 0o4755, 1, 1, 0, hashlib.sha256(b"").hexdigest(), node=3))
    return index


def test_index_of_a_loaded_and_changed_index_is_written_with_the_same_bytes(tmp_path: Path) -> None:
    index = _index()
    assert index.dumps() == _golden(index)
    (tmp_path / "a.gz").write_bytes(index.dumps())
    loaded = Index.load(tmp_path / "a.gz")
    assert loaded.entries == index.entries and loaded.dumps() == index.dumps()
    loaded.put("etc/new", Entry(FILE, 0o600, 0, 0, 1, "ab", node=loaded.new_node()))
    loaded.put("etc/link", Entry(SYMLINK, 0o777, 0, 0, target="elsewhere"))  # replaced
    loaded.remove("opaque")
    loaded.set_node_metadata(2, 0o640, 7, 8)  # both names of node 2
    loaded.put("opaque", Entry(DIR, 0o755, 0, 0))  # back, as another entry
    assert loaded.dumps() == _golden(loaded)
    (tmp_path / "b.gz").write_bytes(loaded.dumps())
    again = Index.load(tmp_path / "b.gz")
    assert again.entries == loaded.entries and again.dumps() == _golden(loaded)


def test_index_without_the_opaque_field_is_written_with_it(tmp_path: Path) -> None:
    old = '["", "d", 493, 0, 0, 0, "", "", 0]\n["etc", "d", 493, 0, 0, 0, "", "", 0]\n'
    (tmp_path / "old.gz").write_bytes(gzip.compress(old.encode()))
    loaded = Index.load(tmp_path / "old.gz")
    assert loaded.dumps() == _golden(loaded)
    assert b'["etc", "d", 493, 0, 0, 0, "", "", 0, 0]' in gzip.decompress(loaded.dumps())

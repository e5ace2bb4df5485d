"""The publish fast paths keep their guarantees: the streaming tar reader reads what tarfile reads
(however the bytes arrive), the hard-link copy is what `cp -a --link` makes, and the check of a
code-only version still catches a changed, missing or extra entry it did not write itself."""

from __future__ import annotations

import gzip
import io
import itertools
import os
import random
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.cvmfs.backends import _link_copy
from imagekit.cvmfs.flatten import CHUNK, Tree, UnsafeLayer, apply_layer
from imagekit.cvmfs.index import Index
from imagekit.cvmfs.verify import compare
from imagekit.errors import ToolError

from .images import E, layer


class Dribble:
    """A blob that arrives a few odd-sized bytes at a time: tar headers straddle every read."""

    def __init__(self, data: bytes, step: int = 997) -> None:
        self._data = io.BytesIO(data)
        self._step = step

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, self._step) if size >= 0 else self._step)


def _big(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _layers() -> list[bytes]:
    long_name = "deep/" + "d" * 120 + "/" + "f" * 150  # a pax path header
    return [
        layer(
            E("deep", "d"),
            E("deep/" + "d" * 120, "d"),
            E(long_name, "f", _big(CHUNK + 777, 1), 0o755),
            E("zeros", "f", bytes(3 * CHUNK)),  # kept sparse
            E("link", "l", "zeros"),
            E("hard", "h", "zeros"),
            E("setuid", "f", b"#!/bin/sh\n", 0o4755),
        ),
        layer(E(".wh.link"), E("deep/new", "f", _big(5000, 2)), E("empty", "f", b"")),
    ]


def _flip(data: bytes, at: int) -> bytes:
    """One bit of `data` changed: random file data is stored, not compressed, so only the CRC tells."""
    changed = bytearray(data)
    changed[at] ^= 0x40
    return bytes(changed)


def _apply(root: Path | None, blobs: list[bytes], wrap: Callable[[bytes], Dribble] | None = None) -> Tree:
    tree = Tree(Index(), root)
    for n, blob in enumerate(blobs):
        apply_layer(tree, wrap(blob) if wrap else io.BytesIO(blob), f"sha256:{n}")
    return tree


def _tarfile_index(blobs: list[bytes]) -> dict[str, tuple[str, int]]:
    """Name → (type, size) as tarfile itself reads the layers, for what the index must hold."""
    seen: dict[str, tuple[str, int]] = {}
    for blob in blobs:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as archive:
            for member in archive:
                seen[member.name] = (member.type.decode(), member.size)
    return seen


def test_streaming_reader_agrees_with_tarfile_however_the_bytes_arrive(tmp_path: Path) -> None:
    raw = _layers()
    # a multi-member gzip, as some tools write: the reader must go on past the first member
    first = raw[0]
    multi = gzip.compress(first[: len(first) // 2], mtime=0) + gzip.compress(
        first[len(first) // 2 :], mtime=0
    )
    blobs = [multi, gzip.compress(raw[1], mtime=0)]
    (tmp_path / "a").mkdir()
    whole = _apply(tmp_path / "a", blobs)
    dribbled = _apply(None, raw, Dribble)
    assert dict(whole.index.items()) == dict(dribbled.index.items())
    names = {f"/{p}" for p, _ in whole.index.items()}
    for name in _tarfile_index(raw):
        if ".wh." not in name and name != "link":
            assert f"/{name}" in names
    assert "/link" not in names  # the second layer's whiteout removed it
    assert compare(whole.index, tmp_path / "a") == []
    zeros = os.stat(tmp_path / "a" / "zeros")
    assert zeros.st_size == 3 * CHUNK and zeros.st_blocks * 512 < CHUNK  # zeros stayed a hole
    assert os.stat(tmp_path / "a" / "setuid").st_mode & 0o7777 == 0o4755


def test_a_multi_member_gzip_layer_arriving_in_odd_pieces_flattens_like_the_plain_tar(tmp_path: Path) -> None:
    """Member boundaries, gzip headers and trailers straddle the reads; the inflater (ISA-L) must
    carry on across all of them and give exactly the tar."""
    raw = _layers()
    cut = [0, 700, len(raw[0]) // 2, len(raw[0]) - 3, len(raw[0])]
    members = b"".join(gzip.compress(raw[0][a:b], mtime=0) for a, b in itertools.pairwise(cut))
    blobs = [members, gzip.compress(raw[1], compresslevel=9, mtime=0)]
    (tmp_path / "gz").mkdir()
    (tmp_path / "tar").mkdir()
    dribbled = _apply(tmp_path / "gz", blobs, lambda blob: Dribble(blob, 7))
    plain = _apply(tmp_path / "tar", raw)
    assert dict(dribbled.index.items()) == dict(plain.index.items())
    assert compare(dribbled.index, tmp_path / "gz") == []


@pytest.mark.parametrize(
    ("blob", "expected"),
    [
        (gzip.compress(layer(E("a", "f", _big(100_000, 3))), mtime=0)[:-5000], "truncated"),
        (b"\x1f\x8b\x08\x00garbage-not-deflate" * 10, "corrupt gzip data"),
        (_flip(gzip.compress(layer(E("a", "f", _big(100_000, 3))), mtime=0), -8), "corrupt gzip data"),
        (_flip(gzip.compress(layer(E("a", "f", _big(100_000, 3))), mtime=0), 5000), "corrupt gzip data"),
        (gzip.compress(layer(E("a", "f", b"x")), mtime=0) + b"garbage", "what follows its last member"),
        (layer(E("a", "f", _big(100_000, 3)))[:50_000], "the tar ends inside 'a'"),
        (b"x" * 512, "not a readable tar"),
        (b"", "not a readable tar: empty"),
    ],
    ids=[
        "truncated gzip",
        "corrupt gzip",
        "wrong CRC",
        "flipped byte in stored data",
        "trailing garbage",
        "truncated tar",
        "bad header",
        "empty",
    ],
)
def test_broken_layers_are_refused_with_a_reason(tmp_path: Path, blob: bytes, expected: str) -> None:
    with pytest.raises(ToolError) as refused:
        apply_layer(Tree(Index(), tmp_path), io.BytesIO(blob), "sha256:broken")
    assert expected in refused.value.message


def test_link_copy_is_what_cp_makes(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    _apply(source, [gzip.compress(b, mtime=0) for b in _layers()])
    os.chmod(source / "deep", 0o711)
    os.setxattr(source / "deep", "user.note", b"kept")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    _link_copy(source, ours)
    subprocess.run(["cp", "-a", "--link", "--no-target-directory", str(source), str(theirs)], check=True)
    for dirpath, dirnames, filenames in os.walk(theirs):
        for name in ["", *dirnames, *filenames]:
            rel = os.path.relpath(os.path.join(dirpath, name), theirs)
            a, b = os.lstat(ours / rel), os.lstat(theirs / rel)
            assert (a.st_mode, a.st_uid, a.st_gid, a.st_mtime_ns) == (
                b.st_mode,
                b.st_uid,
                b.st_gid,
                b.st_mtime_ns,
            ), rel
            assert (a.st_ino == b.st_ino) == (
                not os.path.isdir(theirs / rel) or os.path.islink(theirs / rel)
            ), rel
    assert sorted(str(p.relative_to(ours)) for p in ours.rglob("*")) == sorted(
        str(p.relative_to(theirs)) for p in theirs.rglob("*")
    )
    assert os.getxattr(ours / "deep", "user.note") == b"kept"


def _code_only(tmp_path: Path) -> tuple[Index, Path, Path]:
    """A verified base tree, its hard-link copy and one new layer applied to the copy."""
    base = tmp_path / "base"
    base.mkdir()
    built = _apply(base, [gzip.compress(b, mtime=0) for b in _layers()])
    assert compare(built.index, base) == []
    (tmp_path / "index.gz").write_bytes(built.index.dumps())
    work = tmp_path / "work"
    _link_copy(base, work)
    index = Index.load(tmp_path / "index.gz")
    tree = Tree(index, work)
    apply_layer(tree, io.BytesIO(layer(E("opt", "d"), E("opt/run", "f", "echo 1.1", 0o755))), "sha256:code")
    tree.put_bytes("marker", b"runtime file", 0o644)
    return index, base, work


def test_code_only_check_passes_a_clean_copy_and_reads_only_what_it_wrote(tmp_path: Path) -> None:
    index, base, work = _code_only(tmp_path)
    assert index.changed == {"opt", "opt/run", "marker"}
    assert compare(index, work, trusted=base, changed=index.changed) == []


@pytest.mark.parametrize("damage", ["replaced", "missing", "extra", "dir mode", "new file"])
def test_code_only_check_catches_damage_it_did_not_write(tmp_path: Path, damage: str) -> None:
    index, base, work = _code_only(tmp_path)
    deep = "deep/" + "d" * 120
    if damage == "replaced":  # same size, other inode and content: no longer the verified one
        (work / "deep/new").unlink()
        (work / "deep/new").write_bytes(_big(5000, 99))
        expected = "/deep/new: content differs"
    elif damage == "missing":
        (work / "setuid").unlink()
        expected = "/setuid: missing"
    elif damage == "extra":
        (work / deep / "intruder").write_text("")
        expected = "holds what the image does not: intruder"
    elif damage == "dir mode":
        os.chmod(work / "deep", 0o777)
        expected = "/deep: mode 0o777"
    else:
        (work / "opt/run").write_text("echo 1.2")  # what the new layer wrote is read again
        expected = "/opt/run: content differs"
    problems = "\n".join(compare(index, work, trusted=base, changed=index.changed))
    assert expected in problems


def test_gnu_sparse_file_is_unpacked_as_a_sparse_file(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    with open(source / "disk.img", "wb") as handle:
        handle.truncate(64 << 20)
        handle.seek(40 << 20)
        handle.write(b"middle")
    archive = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-C", str(source), "-cf", str(archive), "disk.img"], check=True)
    target = tmp_path / "target"
    target.mkdir()
    tree = _apply(target, [archive.read_bytes()])
    assert compare(tree.index, target) == []
    st = os.stat(target / "disk.img")
    assert st.st_size == 64 << 20 and st.st_blocks * 512 < 1 << 20
    assert (target / "disk.img").read_bytes() == (source / "disk.img").read_bytes()


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, 4 << 30  # would be read whole into memory
    with pytest.raises(UnsafeLayer) as refused:
        apply_layer(Tree(Index(), tmp_path), io.BytesIO(header.tobuf(tarfile.USTAR_FORMAT)), "sha256:bomb")
    assert "layer sha256:bomb: a tar header of 4294967296 bytes; refused" in refused.value.message

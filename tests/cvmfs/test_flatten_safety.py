"""Hostile layers are refused, naming layer and entry, and nothing outside the target is touched;
hard links to files of earlier layers (which Docker itself refuses to pull) share the lower inode."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from imagekit.cvmfs.flatten import Stats, Tree, UnsafeLayer, apply_layer
from imagekit.cvmfs.index import Index
from imagekit.cvmfs.verify import compare

from .images import E, layer


def _hash_dir(root: Path) -> str:
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            full = Path(dirpath) / name
            st = os.lstat(full)
            digest.update(f"{full}:{st.st_mode}:{st.st_uid}:{st.st_size}".encode())
            if full.is_symlink():
                digest.update(os.readlink(full).encode())
            elif full.is_file():
                digest.update(full.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """A target, and an 'outside' directory beside it that no layer may reach."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("do not touch")
    target = tmp_path / "target"
    target.mkdir()
    return target, outside


BASE = layer(E("etc", "d", mode=0o755), E("etc/passwd", "f", "root:x:0:0"), E("escape", "l", "../outside"))

HOSTILE = {
    "dotdot": (layer(E("../outside/evil", "f", "x")), "'../outside/evil' contains '..'"),
    "absolute": (layer(E("/outside/evil", "f", "x")), "'/outside/evil' is an absolute name"),
    "symlinked parent": (layer(E("escape/evil", "f", "x")), "written through the symlink /escape"),
    "hard link outside": (
        layer(E("evil", "h", "../outside/secret")),
        "hard link 'evil' -> '../outside/secret' contains '..'",
    ),
    "hard link through symlink": (
        layer(E("evil", "h", "escape/secret")),
        "'escape/secret' would be written through the symlink /escape",
    ),
    "whiteout through symlink": (layer(E("escape/.wh.secret")), "written through the symlink /escape"),
    "parent is a file": (layer(E("etc/passwd/x", "f", "x")), "parent /etc/passwd is not a directory"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer_is_refused_and_nothing_outside_changes(case: str, sandbox: tuple[Path, Path]) -> None:
    target, outside = sandbox
    tree = Tree(Index(), target)
    apply_layer(tree, io.BytesIO(BASE), "sha256:base")
    before = _hash_dir(target.parent)
    data, expected = HOSTILE[case]
    with pytest.raises(UnsafeLayer) as refused:
        apply_layer(tree, io.BytesIO(data), "sha256:hostile")
    assert "layer sha256:hostile" in refused.value.message
    assert expected in refused.value.message
    assert refused.value.exit_code == 2
    assert _hash_dir(target.parent) == before
    assert (outside / "secret").read_text() == "do not touch"


def test_hard_link_to_a_file_of_an_earlier_layer(tmp_path: Path) -> None:
    tree = Tree(Index(), tmp_path, Stats())
    apply_layer(tree, io.BytesIO(layer(E("lib", "d"), E("lib/a.so", "f", "payload", 0o755))), "l1")
    apply_layer(tree, io.BytesIO(layer(E("lib/b.so", "h", "lib/a.so", 0o755))), "l2")
    assert os.lstat(tmp_path / "lib/b.so").st_ino == os.lstat(tmp_path / "lib/a.so").st_ino
    apply_layer(tree, io.BytesIO(layer(E("lib/.wh.a.so"))), "l3")
    assert (tmp_path / "lib/b.so").read_text() == "payload"
    assert compare(tree.index, tmp_path) == []


def test_verify_sees_a_changed_a_missing_and_an_extra_file(tmp_path: Path) -> None:
    tree = Tree(Index(), tmp_path)
    apply_layer(
        tree, io.BytesIO(layer(E("bin", "d"), E("bin/x", "f", "x", 0o755), E("bin/y", "f", "y"))), "l1"
    )
    (tmp_path / "bin/y").unlink()
    (tmp_path / "bin/x").write_text("z")
    (tmp_path / "bin/extra").write_text("")
    problems = "\n".join(compare(tree.index, tmp_path))
    assert "/bin/x: content differs" in problems
    assert "/bin/y: missing" in problems
    assert "holds what the image does not: extra" in problems

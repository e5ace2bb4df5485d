"""The tar a whole flat is ingested from (cvmfs_server), extracted by GNU tar: the tree the local backend
writes for the same image (whose equality with `docker export` test_flatten_docker shows), and the
same chain snapshot; the hashes taken while it was sent are the local index's."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from imagekit import cvmfs
from imagekit.config import Profile
from imagekit.cvmfs import stream
from imagekit.cvmfs.flatten import Limits, Tree, UnsafeLayer, apply_members, read_members
from imagekit.cvmfs.index import Index
from imagekit.cvmfs.layout import flat_rel, index_rel
from imagekit.cvmfs.publish import chain_rel
from imagekit.cvmfs.source import fetch_image
from imagekit.registry import RegistryClient

from .images import E, inode_groups, layer, push_layers, tree_rows
from .test_flatten_docker import HAND_MADE
from .test_flatten_safety import BASE, HOSTILE

pytestmark = [pytest.mark.registry]

LIMITS = Limits(1_000_000, 1 << 40)
MODE_CHANGE = layer(E("bin/tool-private", "h", "bin/tool", 0o700))
"""A hard link, with another mode, to a file of an earlier layer (Docker refuses such a layer, overlayfs
takes it): the file is copied up, so the mode changes for it and the new name, not for the earlier
layer's other name of it (bin/tool-alias), nor in the chain snapshot below this layer."""


def _rows(index: Index) -> list[tuple[object, ...]]:
    return [(p, e.kind, e.mode, e.uid, e.gid, e.size, e.sha256, e.target, e.opaque) for p, e in index.items()]


@pytest.mark.parametrize("layers", [HAND_MADE, [*HAND_MADE, MODE_CHANGE]], ids=["hand-made", "mode-change"])
def test_the_streamed_tar_is_the_local_flat_and_chain(
    tree_profile: Profile, registry_client: RegistryClient, tmp_path: Path, layers: list[bytes]
) -> None:
    repository = f"{tree_profile.registry.project}/streamed"
    push_layers(registry_client, repository, "1.0", layers)
    local = cvmfs.publish(tree_profile, f"{repository}:1.0", skip_reason="test image")
    root = tree_profile.cvmfs_root
    image = fetch_image(registry_client, tree_profile.registry.url, repository, "1.0")
    chain = chain_rel(image.chain[:-1])
    assert (root / chain).is_dir()

    lines: list[str] = []
    planned = stream.plan(image, registry_client, "new/flat", "new/chain", LIMITS, lines.append)
    assert all(not entry.sha256 for _, entry in planned.trees[0].index.items())  # nothing hashed yet
    with (tmp_path / "flat.tar").open("wb") as out:
        stream.send(planned, image, registry_client, out, ["new"], lines.append)
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(["tar", "-xpf", tmp_path / "flat.tar", "-C", extracted, "--numeric-owner"], check=True)

    assert tree_rows(extracted / "new/flat") == tree_rows(root / local.publication.flat)
    assert tree_rows(extracted / "new/chain") == tree_rows(root / chain)
    assert _rows(planned.trees[0].index) == _rows(Index.load(root / index_rel(image.config_hex)))
    assert _rows(planned.trees[1].index) == _rows(Index.load(root / f"{chain}.index.gz"))
    assert inode_groups(extracted / "new/flat") == inode_groups(root / local.publication.flat)
    if MODE_CHANGE in layers:
        flat = extracted / "new/flat"
        assert frozenset({"bin/tool", "bin/tool-private"}) in inode_groups(flat)
        assert [
            (flat / "bin" / name).stat().st_mode & 0o777 for name in ("tool", "tool-private", "tool-alias")
        ] == [
            0o700,
            0o700,
            0o755,
        ]
    assert any(line.startswith("sending layer") for line in lines)
    assert flat_rel(image.config_hex) == local.publication.flat


def test_a_hostile_layer_is_refused_before_anything_is_sent(
    tree_profile: Profile, registry_client: RegistryClient
) -> None:
    repository = f"{tree_profile.registry.project}/hostile"
    push_layers(
        registry_client, repository, "1.0", [layer(E("etc", "l", "/etc")), layer(E("etc/passwd", "f", "x"))]
    )
    image = fetch_image(registry_client, tree_profile.registry.url, repository, "1.0")
    with pytest.raises(UnsafeLayer, match="would be written through the symlink /etc"):
        stream.plan(image, registry_client, "flat", None, LIMITS, lambda _: None)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_the_first_reading_refuses_what_a_flat_on_disk_refuses(case: str) -> None:
    tree = Tree(Index(), None, digests=False)
    apply_members(tree, read_members(io.BytesIO(BASE), "sha256:base", LIMITS), "sha256:base", lambda *_: None)
    data, expected = HOSTILE[case]
    members = read_members(io.BytesIO(data), "sha256:hostile", LIMITS)
    with pytest.raises(UnsafeLayer, match="layer sha256:hostile") as refused:
        apply_members(tree, members, "sha256:hostile", lambda *_: None)
    assert expected in refused.value.message


def test_a_layer_of_too_many_entries_is_refused_as_it_is_read() -> None:
    many = layer(*(E(f"f{n}", "f", "x") for n in range(50)))
    with pytest.raises(UnsafeLayer, match=r"more than 10 entries in the image \(cvmfs.max_entries\)"):
        read_members(io.BytesIO(many), "sha256:many", Limits(10, 1 << 30))

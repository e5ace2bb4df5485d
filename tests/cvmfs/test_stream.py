"""The tar a whole flat is ingested from (cvmfs_server), extracted by GNU tar: the tree the local backend
writes for the same image (whose equality with `docker export` test_flatten_docker shows), and the
same chain snapshot; the hashes taken while it was sent are the local index's."""

from __future__ import annotations

import io
import random
import subprocess
import tarfile
from pathlib import Path

import pytest

from imagekit import cvmfs
from imagekit.config import Profile
from imagekit.cvmfs import stream
from imagekit.cvmfs.flatten import Limits, Tree, UnsafeLayer, apply_members, open_layer
from imagekit.cvmfs.index import Index
from imagekit.cvmfs.layout import flat_rel, index_rel
from imagekit.cvmfs.publish import chain_rel
from imagekit.cvmfs.source import Image, fetch_image
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


def _with_parents_first(raw: bytes, *parents: E) -> bytes:
    """A layer with directory entries for its members' parents ahead of them, as Docker writes layers."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        entries = [E(m.name, "d", mode=m.mode) for m in (tarfile.TarInfo(p.name) for p in parents)]
        out = io.BytesIO(layer(*entries))
        members = [(m, archive.extractfile(m)) for m in archive.getmembers()]
    with tarfile.open(fileobj=out, mode="a", format=tarfile.PAX_FORMAT) as appended:
        for member, data in members:
            appended.addfile(member, data)
    return out.getvalue()


PARENTS_FIRST = [
    HAND_MADE[0],
    _with_parents_first(HAND_MADE[1], E("bin", "d"), E("data", "d")),
    _with_parents_first(HAND_MADE[2], E("data", "d")),
]
"""The hand-made layers with their members' parent directories in them: read once, top layer first."""


@pytest.mark.parametrize(
    ("layers", "hold_limit", "read_again"),
    [
        (PARENTS_FIRST, 0, ""),
        (HAND_MADE, stream.HOLD_LIMIT, ""),
        (HAND_MADE, 4, "more than 4 bytes of files come before their directories"),
        ([*PARENTS_FIRST, MODE_CHANGE], 0, f"/new/flat/bin/tool: {stream.OTHER_NAMES}"),
    ],
    ids=["parents-first", "hand-made-held", "hand-made-past-hold", "mode-change"],
)
def test_the_streamed_tar_is_the_local_flat_and_chain(
    tree_profile: Profile,
    registry_client: RegistryClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    layers: list[bytes],
    hold_limit: int,
    read_again: str,
) -> None:
    """Read once where the layers allow it (files before their directory held aside up to a limit), and
    twice (from the plan) where they do not: either tar holds the flat and the chain snapshot the local
    backend writes."""
    monkeypatch.setattr(stream, "HOLD_LIMIT", hold_limit)
    repository = f"{tree_profile.registry.project}/streamed"
    push_layers(registry_client, repository, "1.0", layers)
    local = cvmfs.publish(tree_profile, f"{repository}:1.0", skip_reason="test image")
    root = tree_profile.cvmfs_root
    image = fetch_image(registry_client, tree_profile.registry.url, repository, "1.0")
    chain = chain_rel(image.chain[:-1])
    assert (root / chain).is_dir()

    lines: list[str] = []
    with (tmp_path / "flat.tar").open("wb") as out:
        try:
            planned = stream.stream(
                image, registry_client, "new/flat", "new/chain", LIMITS, out, ["new"], lines.append
            )
            assert not read_again, "read once where the layers need a second reading"
        except stream.ReadAgain as again:
            assert again.why == read_again
            planned = again.plan
    if read_again:
        with (tmp_path / "flat.tar").open("wb") as out:
            stream.send(planned, image, registry_client, out, ["new"], lines.append)
        assert any(line.startswith("sending layer") for line in lines)
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
    assert flat_rel(image.config_hex) == local.publication.flat


def _members(blob: bytes, digest: str) -> list[tarfile.TarInfo]:
    with open_layer(io.BytesIO(blob), digest) as archive:
        return list(archive.members())


def _plan(image: Image, client: RegistryClient, flat: str, chain: str | None) -> stream.Plan:
    """The plan from the layers' members read on their own (not by `stream`)."""
    members = []
    for each in image.layers:
        with client.blob(image.repository, each.digest) as blob:
            members.append(_members(blob.read(), each.digest))
    return stream.plan(image, flat, chain, LIMITS, members)


def test_the_second_reading_sends_the_plan_it_is_given(
    tree_profile: Profile, registry_client: RegistryClient, tmp_path: Path
) -> None:
    """`send` (what a second reading sends) hashes every file as the local index does."""
    repository = f"{tree_profile.registry.project}/streamed"
    push_layers(registry_client, repository, "1.0", PARENTS_FIRST)
    local = cvmfs.publish(tree_profile, f"{repository}:1.0", skip_reason="test image")
    root = tree_profile.cvmfs_root
    image = fetch_image(registry_client, tree_profile.registry.url, repository, "1.0")
    planned = _plan(image, registry_client, "new/flat", None)
    assert all(not entry.sha256 for _, entry in planned.trees[0].index.items())  # nothing hashed yet
    with (tmp_path / "flat.tar").open("wb") as out:
        stream.send(planned, image, registry_client, out, ["new"], lambda _: None)
    extracted = _extract(tmp_path / "flat.tar")
    assert tree_rows(extracted / "new/flat") == tree_rows(root / local.publication.flat)
    assert _rows(planned.trees[0].index) == _rows(Index.load(root / index_rel(image.config_hex)))


def _stream(image: Image, client: RegistryClient, limits: Limits = LIMITS) -> io.BytesIO:
    """What `stream` sent before it raised: never the end of the tar (so ingest never publishes it)."""
    out = io.BytesIO()
    with pytest.raises(UnsafeLayer) as refused:
        stream.stream(image, client, "flat", None, limits, out, ["new"], lambda _: None)
    assert not out.getvalue().endswith(bytes(2 * tarfile.BLOCKSIZE))
    raise refused.value from None


def test_a_hostile_layer_is_refused_and_the_tar_never_ends(
    tree_profile: Profile, registry_client: RegistryClient
) -> None:
    """The upper layer is read (and sent) first; the plan refuses it after the lower one, before the
    tar is ended, so ingest never publishes what it took."""
    repository = f"{tree_profile.registry.project}/hostile"
    push_layers(
        registry_client, repository, "1.0", [layer(E("etc", "l", "/etc")), layer(E("etc/passwd", "f", "x"))]
    )
    image = fetch_image(registry_client, tree_profile.registry.url, repository, "1.0")
    with pytest.raises(UnsafeLayer, match="would be written through the symlink /etc"):
        _stream(image, registry_client)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_the_plan_refuses_what_a_flat_on_disk_refuses(case: str) -> None:
    tree = Tree(Index(), None, digests=False)
    apply_members(tree, _members(BASE, "sha256:base"), "sha256:base", lambda *_: None)
    data, expected = HOSTILE[case]
    members = _members(data, "sha256:hostile")
    with pytest.raises(UnsafeLayer, match="layer sha256:hostile") as refused:
        apply_members(tree, members, "sha256:hostile", lambda *_: None)
    assert expected in refused.value.message


def test_too_many_entries_or_bytes_are_refused_as_they_are_read(
    tree_profile: Profile, registry_client: RegistryClient
) -> None:
    """Nothing past a limit is sent: the entry over the count is refused as its header comes, the file
    over the size before its bytes are read."""
    repository = f"{tree_profile.registry.project}/limits"
    many = layer(*(E(f"f{n}", "f", "x") for n in range(50)))
    push_layers(registry_client, repository, "1.0", [many])
    image = fetch_image(registry_client, tree_profile.registry.url, repository, "1.0")
    with pytest.raises(UnsafeLayer, match=r"more than 10 entries in the image \(cvmfs.max_entries\)"):
        _stream(image, registry_client, Limits(10, 1 << 30))
    small, big = E("small", "f", "a" * 60), E("big", "f", "B" * 60)
    push_layers(registry_client, repository, "1.1", [layer(small, big)])
    image = fetch_image(registry_client, tree_profile.registry.url, repository, "1.1")
    out, too_big = io.BytesIO(), r"'big' takes the image past 100 bytes of files \(cvmfs.max_bytes\)"
    with pytest.raises(UnsafeLayer, match=too_big):
        stream.stream(image, registry_client, "flat", None, Limits(1000, 100), out, [], lambda _: None)
    assert b"a" * 60 in out.getvalue() and b"B" * 60 not in out.getvalue()


def _random_layers(rng: random.Random) -> list[bytes]:
    """Two to four layers of a small name space: directories (with or without their parents' entries),
    files of a few contents and modes, symlinks, hard links (mostly to files made before, mostly with
    their mode), whiteouts, opaque directories; now and then a directory replaced by a file, or a name
    given twice in a layer."""
    dirs = ["a", "b", "a/c", "a/c/d", "b/e"]
    leaves = ["a/f", "a/c/g", "a/c/d/k", "b/h", "b/e/i", "j"]
    files: dict[str, int] = {}
    layers = []
    for _ in range(rng.randint(2, 4)):
        entries: list[E] = []
        for _ in range(rng.randint(1, 9)):
            roll = rng.random()
            path = rng.choice(dirs if roll < 0.2 or roll >= 0.9 else leaves)
            if rng.random() < 0.05:
                path = rng.choice(dirs)  # a file or link where a directory was
            elif any(e.name == path for e in entries) and rng.random() < 0.9:
                continue  # a name twice in one layer: Docker never writes one, tar takes the last
            if rng.random() < 0.7:
                entries += [E(d, "d", mode=0o755) for d in dirs if path.startswith(d + "/")]
            if roll < 0.2:
                entries.append(E(path, "d", mode=rng.choice([0o755, 0o700]), uid=rng.choice([0, 5])))
            elif roll < 0.6:
                files[path] = rng.choice([0o644, 0o600, 0o755])
                entries.append(E(path, "f", rng.choice(["x", "y", "zz"]), files[path]))
            elif roll < 0.65:
                entries.append(E(path, "l", rng.choice(["f", "../j", "/etc"])))
            elif roll < 0.75:
                target = rng.choice(sorted(files) or leaves)
                mode = files.get(target, 0o644) if rng.random() < 0.8 else 0o600
                entries.append(E(path, "h", target, mode))
            elif roll < 0.9:
                head, _, base = path.rpartition("/")
                entries.append(E(f"{head}/.wh.{base}" if head else f".wh.{base}"))
            else:
                entries.append(E(f"{path}/.wh..wh..opq"))
        layers.append(layer(*entries))
    return layers


def _quiet(_: str) -> None:
    pass


def _extract(tar: Path) -> Path:
    target = tar.with_suffix("")
    target.mkdir()
    subprocess.run(["tar", "-xpf", tar, "-C", target, "--numeric-owner"], check=True)
    return target


def test_one_reading_and_two_readings_agree_on_random_layers(
    tree_profile: Profile, registry_client: RegistryClient, tmp_path: Path
) -> None:
    """On 120 random stacks of layers, the one reading sends what the two readings send (the same tree,
    the same hard links, the same index) or says why it cannot (`ReadAgain`), and refuses what they
    refuse with the same message; most stacks are read once."""
    rng = random.Random(11)
    outcomes = {"once": 0, "again": 0, "refused": 0}
    for case in range(120):
        layers = _random_layers(rng)
        repository = f"{tree_profile.registry.project}/random"
        push_layers(registry_client, repository, str(case), layers)
        image = fetch_image(registry_client, tree_profile.registry.url, repository, str(case))
        chain = "new/chain" if len(layers) > 1 else None
        work = tmp_path / str(case)
        work.mkdir()
        try:
            reference = _plan(image, registry_client, "new/flat", chain)
        except UnsafeLayer as refused:
            with pytest.raises(UnsafeLayer) as also, (work / "one.tar").open("wb") as out:
                stream.stream(image, registry_client, "new/flat", chain, LIMITS, out, ["new"], lambda _: None)
            assert also.value.message == refused.message, case
            outcomes["refused"] += 1
            continue
        with (work / "two.tar").open("wb") as out:
            stream.send(reference, image, registry_client, out, ["new"], lambda _: None)
        try:
            with (work / "one.tar").open("wb") as out:
                once = stream.stream(image, registry_client, "new/flat", chain, LIMITS, out, ["new"], _quiet)
        except stream.ReadAgain as again:
            planned = _plan(image, registry_client, "new/flat", chain)
            assert [_rows(t.index) for t in again.plan.trees] == [_rows(t.index) for t in planned.trees]
            outcomes["again"] += 1
            continue
        one, two = _extract(work / "one.tar"), _extract(work / "two.tar")
        assert tree_rows(one) == tree_rows(two), case
        assert inode_groups(one) == inode_groups(two), case
        assert [_rows(t.index) for t in once.trees] == [_rows(t.index) for t in reference.trees], case
        outcomes["once"] += 1
    assert outcomes["once"] > outcomes["again"] and outcomes["refused"] > 0, outcomes

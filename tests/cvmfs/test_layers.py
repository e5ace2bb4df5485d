"""`.layers/<d[0:2]>/<d>/layerfs` (cvmfs.layers): each layer on its own in the form containerd's overlayfs
snapshotter uses, proven by mounting the layerfs trees with the kernel's overlayfs and comparing the
result with the published flat; verified, garbage-collected, refused where a backend cannot hold it."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagekit import cvmfs
from imagekit.config import Profile
from imagekit.cvmfs.layout import layer_index_rel, layer_rel, layerfs_rel
from imagekit.errors import ToolError
from imagekit.registry import RegistryClient

from .images import IMAGEKIT_ADDED, E, layer, push_layers, tree_rows
from .test_cvmfs_server import Server, server  # noqa: F401  (the stand-in and the real one)
from .test_flatten_docker import HAND_MADE
from .test_publish_local import BASE, COTS, code, tree_hash

pytestmark = [pytest.mark.registry]
SKIPPED = {"dev/null", "data/fifo"}  # a device node and a FIFO: never created, in no tree


@pytest.fixture
def layers_profile(tree_profile: Profile) -> Profile:
    profile = tree_profile.model_copy(deep=True)
    profile.cvmfs.layers = True
    return profile


def _publish(profile: Profile, ref: str) -> cvmfs.PublishResult:
    return cvmfs.publish(profile, ref, skip_reason="test image")


def _digests(client: RegistryClient, repository: str, tag: str) -> list[str]:
    return [entry["digest"] for entry in client.manifest(repository, tag).json()["layers"]]


@pytest.fixture
def overlay(tmp_path: Path, require_part: object) -> Iterator[object]:
    """`overlay(lowers)`: the kernel's overlayfs view of layerfs trees (top first), unmounted afterwards."""
    mounted: list[Path] = []

    def mount(lowers: list[Path]) -> Path:
        target = tmp_path / f"overlay-{len(mounted)}"
        target.mkdir()
        done = subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                "lowerdir=" + ":".join(map(str, lowers)),
                str(target),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            require_part(f"an overlayfs mount is not permitted here: {done.stderr.strip()}")  # type: ignore[operator]
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", str(target)], capture_output=True, check=False)


def test_layerfs_stack_mounts_as_the_flat(
    layers_profile: Profile, registry_client: RegistryClient, overlay: object
) -> None:
    repository = f"{layers_profile.registry.project}/layers"
    push_layers(registry_client, repository, "1.0", HAND_MADE)
    result = _publish(layers_profile, f"{repository}:1.0")
    root = layers_profile.cvmfs_root
    digests = _digests(registry_client, repository, "1.0")
    for digest in digests:
        assert (root / layerfs_rel(digest)).is_dir() and (
            root / layer_rel(digest) / ".cvmfscatalog"
        ).is_file()
        assert (root / layer_rel(digest)).parent.joinpath(".cvmfscatalog").is_file()

    second = root / layerfs_rel(digests[1])
    whiteout = os.lstat(second / "data/gone")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(second / "data/opaque", "trusted.overlay.opaque") == b"y"
    assert not (second / "data/.wh.gone").exists() and not (second / "data/opaque/.wh..wh..opq").exists()
    flat = root / result.publication.flat
    assert os.lstat(second / "data/opaque/new").st_ino == os.lstat(flat / "data/opaque/new").st_ino
    # a hard link to a lower layer's file: this layer holds the file itself, as overlayfs copies it up
    assert (second / "data/shared-again").read_text() == "shared content"

    merged = tree_rows(overlay([root / layerfs_rel(d) for d in reversed(digests)]))  # type: ignore[operator]
    flattened = {
        path: row
        for path, row in tree_rows(flat).items()
        if path.split("/")[0] != ".singularity.d" and path not in IMAGEKIT_ADDED
    }
    assert {p: r for p, r in merged.items() if p not in SKIPPED and p != "dev"} == flattened
    assert cvmfs.verify(layers_profile).problems == {}

    os.unlink(second / "data/gone")
    broken = cvmfs.verify(layers_profile, repository, "1.0").problems
    assert broken == {layer_rel(digests[1]): ["/data/gone: missing (whiteout expected)"]}


def test_code_only_version_writes_only_its_layer_and_gc_removes_unused_layers(
    layers_profile: Profile, registry_client: RegistryClient
) -> None:
    repository = f"{layers_profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, COTS, code("1.0")])
    push_layers(registry_client, repository, "1.1", [BASE, COTS, code("1.1")])
    root = layers_profile.cvmfs_root
    _publish(layers_profile, "proc:1.0")
    old = _digests(registry_client, repository, "1.0")
    shared = root / layer_rel(old[1])
    before = tree_hash(shared)
    time.sleep(1.1)  # publication times are to the second: 1.1 is the newest

    second = _publish(layers_profile, "proc:1.1")
    assert second.publication.layers_applied == 1 and second.publication.bytes_written < 20_000
    assert tree_hash(shared) == before
    new = _digests(registry_client, repository, "1.1")
    assert new[:2] == old[:2] and (root / layerfs_rel(new[2]) / "opt/processor/VERSION").read_text() == "1.1"

    plan, verified = cvmfs.gc(layers_profile, 1, dry_run=False, log=lambda _: None)
    assert plan.layers == [layer_rel(old[2])]
    assert not (root / layer_rel(old[2])).exists() and not (root / layer_index_rel(old[2])).exists()
    assert all((root / layerfs_rel(d)).is_dir() for d in new)
    assert verified is not None and verified.problems == {}


def test_switching_layers_on_builds_them_for_a_published_image(
    tree_profile: Profile, layers_profile: Profile, registry_client: RegistryClient
) -> None:
    repository = f"{tree_profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, code("1.0")])
    _publish(tree_profile, "proc:1.0")
    root = tree_profile.cvmfs_root
    assert not (root / ".layers").exists()
    assert cvmfs.verify(layers_profile).problems != {}  # the switch is on: the missing layers are reported

    again = _publish(layers_profile, "proc:1.0")
    assert not again.noop
    assert all((root / layerfs_rel(d)).is_dir() for d in _digests(registry_client, repository, "1.0"))
    assert cvmfs.verify(layers_profile).problems == {}
    assert _publish(layers_profile, "proc:1.0").noop


def test_hostile_layer_writes_no_layerfs(layers_profile: Profile, registry_client: RegistryClient) -> None:
    repository = f"{layers_profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, code("1.0")])
    push_layers(registry_client, repository, "2.0", [BASE, code("2.0"), layer(E("opt/../../x", "f", "x"))])
    _publish(layers_profile, "proc:1.0")
    root = layers_profile.cvmfs_root
    before = tree_hash(root, skip=(".imagekit/lock",))
    with pytest.raises(cvmfs.UnsafeLayer, match=r"contains '\.\.'"):
        _publish(layers_profile, "proc:2.0")
    assert tree_hash(root, skip=(".imagekit/lock",)) == before


def test_cvmfs_server_refuses_overlay_markers_and_aborts(
    server: Server,  # noqa: F811
    registry_client: RegistryClient,
) -> None:
    profile, log = server.profile, server.log
    profile.cvmfs.layers = True
    start = server.revision()
    repository = f"{profile.registry.project}/proc"
    push_layers(registry_client, repository, "1.0", [BASE, code("1.0")])
    push_layers(registry_client, repository, "2.0", [BASE, code("2.0"), layer(E("opt/processor/.wh.run"))])
    first = _publish(profile, "proc:1.0")
    root = server.root
    assert all((root / layerfs_rel(d)).is_dir() for d in _digests(registry_client, repository, "1.0"))
    # the .layers/<xx> buckets are made first, in a revision of their own (the repository had only .flat's)
    assert first.publication.revision == start + 2 and cvmfs.verify(profile).problems == {}
    before = tree_hash(root)
    log.write_text("")
    with pytest.raises(ToolError, match=r"whiteout /opt/processor/run: .* cvmfs_server transaction"):
        _publish(profile, "proc:2.0")
    # the failed transaction is aborted
    assert f"abort -f {server.repository}" in log.read_text().splitlines()
    assert tree_hash(root) == before

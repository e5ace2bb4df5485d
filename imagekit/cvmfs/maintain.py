"""What operators run later: `verify` (the tree still matches what was published) and `gc`.

GC keeps, per repository, the flats of the N newest published versions and every flat a channel
points to; it removes the other versions' tags and metadata, then every flat (and its index) and every
`.layers` entry that no remaining tag references, verifies what remains, and runs the backend's own GC.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imagekit.config import Profile
from imagekit.cvmfs.backends import backend_for
from imagekit.cvmfs.index import Index
from imagekit.cvmfs.layout import (
    FLAT,
    LAYERS,
    METADATA,
    STATE,
    flat_rel,
    index_rel,
    layer_index_rel,
    layer_rel,
    layerfs_rel,
    metadata_rel,
)
from imagekit.cvmfs.publish import PUBLICATION, Publication, _read_json, known_trees
from imagekit.cvmfs.verify import compare
from imagekit.errors import InputError

Log = Callable[[str], None]


@dataclass
class TagLink:
    """One `<registry>/<repository>:<tag>` symlink of the tree."""

    rel: str
    repository: str
    tag: str
    target: str
    publication: Publication | None

    @property
    def is_channel(self) -> bool:
        return self.publication is None and not self.target.startswith(".")

    def layer_digests(self, root: Path, registry: str) -> list[str]:
        """The compressed layer digests of a published version (its `layers.json`)."""
        path = root / metadata_rel(registry, self.repository, self.tag) / "layers.json"
        try:
            layers = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [str(layer["digest"]) for layer in layers if isinstance(layer, dict) and "digest" in layer]


def tag_links(root: Path, registry: str) -> list[TagLink]:
    """Every tag and channel symlink under `<root>/<registry>/`."""
    found: list[TagLink] = []
    top = root / registry
    if not top.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*filenames, *dirnames]:
            full = Path(dirpath) / name
            if ":" not in name or not full.is_symlink():
                continue
            rel = str(full.relative_to(root))
            repository, _, tag = str(full.relative_to(top)).rpartition(":")
            data = _read_json(root / METADATA / registry / f"{repository}:{tag}" / PUBLICATION)
            publication = Publication.model_validate(data) if data else None
            found.append(TagLink(rel, repository, tag, os.readlink(full), publication))
    return sorted(found, key=lambda link: link.rel)


@dataclass
class VerifyResult:
    checked: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)


def verify(profile: Profile, repository: str | None = None, tag: str | None = None) -> VerifyResult:
    """Check each published flat (or the one of `repository:tag`) against its index."""
    backend = backend_for(profile)
    backend.serve(lambda _: None)  # after a reboot a Stratum 0's tree is not mounted until this
    root = backend.root
    flats: dict[str, list[str]] = {}
    layers: set[str] = set()
    for link in tag_links(root, profile.registry.url):
        if link.publication is None or (repository and link.repository != repository):
            continue
        if tag and link.tag != tag:
            continue
        flats.setdefault(link.publication.config_digest.split(":", 1)[1], []).append(link.publication.ref)
        layers.update(link.layer_digests(root, profile.registry.url))
    if (repository or tag) and not flats:
        raise InputError(f"{repository}:{tag} is not published in {root}")
    result = VerifyResult()
    for hex_, refs in sorted(flats.items()):
        _check(result, root, f"{flat_rel(hex_)} ({', '.join(refs)})", flat_rel(hex_), index_rel(hex_))
    for digest in sorted(layers):
        if profile.cvmfs.layers or (root / layer_rel(digest)).exists():
            _check(result, root, layer_rel(digest), layerfs_rel(digest), layer_index_rel(digest))
    return result


def _check(result: VerifyResult, root: Path, where: str, tree: str, index: str) -> None:
    result.checked.append(where)
    if not (root / tree).is_dir():
        result.problems[where] = [f"{tree} is missing"]
    elif not (root / index).is_file():
        result.problems[where] = [f"its index {index} is missing"]
    elif problems := compare(Index.load(root / index), root / tree):
        result.problems[where] = problems


@dataclass
class GcPlan:
    tags: list[str] = field(default_factory=list)
    flats: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)
    """Layer-chain snapshots no kept flat extends any more."""
    layers: list[str] = field(default_factory=list)
    """`.layers/<d[0:2]>/<d>` entries no kept version uses."""


def plan_gc(root: Path, registry: str, keep: int) -> GcPlan:
    links = tag_links(root, registry)
    by_rel = {link.rel: link for link in links}
    kept_flats: set[str] = set()
    plan = GcPlan()
    per_repository: dict[str, list[TagLink]] = {}
    for link in links:
        if link.publication is not None:
            per_repository.setdefault(link.repository, []).append(link)
        else:  # a channel: keep what its version points to
            version = by_rel.get(str(Path(link.rel).parent / link.target))
            if version and version.publication:
                kept_flats.add(version.publication.flat)
    for versions in per_repository.values():
        newest: list[str] = []
        for link in sorted(versions, key=lambda v: v.publication.published_at, reverse=True):  # type: ignore[union-attr]
            flat = link.publication.flat  # type: ignore[union-attr]
            if flat not in newest and len(newest) < keep:
                newest.append(flat)
        kept_flats.update(newest)
    referenced: set[str] = set()
    kept_layers: set[str] = set()
    for link in links:
        if link.publication is None:
            continue
        if link.publication.flat in kept_flats:
            referenced.add(link.publication.flat)
            kept_layers.update(layer_rel(d) for d in link.layer_digests(root, registry))
        else:
            plan.tags.append(link.rel)
    if (root / LAYERS).is_dir():
        for bucket in sorted(p for p in (root / LAYERS).iterdir() if p.is_dir()):
            for entry in sorted(p for p in bucket.iterdir() if p.is_dir()):
                rel = f"{LAYERS}/{bucket.name}/{entry.name}"
                if rel not in kept_layers:
                    plan.layers.append(rel)
    bucket_root = root / FLAT
    if bucket_root.is_dir():
        for bucket in sorted(bucket_root.iterdir()):
            for flat in sorted(p for p in bucket.iterdir() if p.is_dir()):
                rel = f"{FLAT}/{bucket.name}/{flat.name}"
                if rel not in referenced:
                    plan.flats.append(rel)
    trees = known_trees(root)
    kept_chains = [tuple(t.chain) for t in trees if t.dir in referenced]
    for tree in trees:
        if tree.dir.startswith(f"{STATE}/") and not any(
            chain[: len(tree.chain)] == tuple(tree.chain) for chain in kept_chains
        ):
            plan.chains.append(tree.dir)
    return plan


def gc(profile: Profile, keep: int, *, dry_run: bool, log: Log) -> tuple[GcPlan, VerifyResult | None]:
    if keep < 1:
        raise InputError("--keep must be at least 1")
    backend = backend_for(profile)
    registry = profile.registry.url
    with backend.lock(log):
        backend.recover(log)
        plan = plan_gc(backend.root, registry, keep)
        if dry_run or not (plan.tags or plan.flats or plan.chains or plan.layers):
            return plan, None
        with backend.transaction(log) as txn:
            for rel in plan.tags:
                repository, _, tag = rel[len(registry) + 1 :].rpartition(":")
                txn.remove(rel)
                txn.remove(metadata_rel(registry, repository, tag))
            for rel in plan.flats:
                hex_ = rel.rsplit("/", 1)[1]
                txn.remove(rel)
                txn.remove(index_rel(hex_))
                txn.remove(f"{STATE}/flats/{hex_}.json")
            for rel in plan.chains:
                for suffix in ("", ".index.gz", ".json"):
                    txn.remove(rel + suffix)
            for rel in plan.layers:
                txn.remove(rel)
                txn.remove(layer_index_rel("sha256:" + rel.rsplit("/", 1)[1]))
        backend.collect_garbage(log)
    return plan, verify(profile)

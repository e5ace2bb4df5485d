"""Publish an image from the registry into the tree; read, verify and collect what is published.

One publication, under the repository lock and inside one backend transaction: pull by digest, build
the flat (from a published flat whose layer chain this image extends, when there is one: only the new
layers are applied), check it against its index, then write the flat's index, the metadata
(manifest.json last: the mark of completeness) and the tag symlink. Where the backend lands a whole
new flat from a tar stream (cvmfs_server ingest), the layers are read once, top layer first, as it
takes the stream, and the tar ends only when the whole tree was judged and sent as planned; it is
checked where it landed while that transaction opens (its metadata waits for the checks), and a
failure removes it again.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from imagekit.config import Profile
from imagekit.cvmfs import stream
from imagekit.cvmfs.backends import Backend, Revision, Transaction, backend_for
from imagekit.cvmfs.flatten import Limits, Stats, Tree, Writable, apply_layer
from imagekit.cvmfs.index import Index
from imagekit.cvmfs.layout import (
    CATALOG,
    STATE,
    add_runtime_files,
    flat_rel,
    index_rel,
    layer_index_rel,
    layer_rel,
    layerfs_rel,
    link_to,
    metadata_rel,
    tag_rel,
)
from imagekit.cvmfs.source import Image, Layer, fetch_image
from imagekit.cvmfs.verify import compare, compare_structure
from imagekit.errors import InputError, PolicyError, ToolError
from imagekit.registry import RegistryClient, read_scan
from imagekit.resources import data_path
from imagekit.scan import require_passed
from imagekit.scan.status import PASSED, PASSED_UNCHECKED

Log = Callable[[str], None]
MANIFEST = "manifest.json"
PUBLICATION = "publication.json"


class Publication(BaseModel):
    """What `.metadata/<registry>/<repository>:<tag>/publication.json` records: the receipt."""

    model_config = ConfigDict(extra="ignore")

    registry: str
    repository: str
    tag: str
    manifest_digest: str
    config_digest: str
    flat: str
    backend: str
    revision: int | None
    published_at: str
    published_by: str
    incremental_from: str | None = None
    layers_applied: int
    entries_written: int
    bytes_written: int
    scan_status: str
    skip_scan_reason: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


class FlatInfo(BaseModel):
    """`.imagekit/{flats,chains}/<id>.json`: the layer chain a tree holds, so a later version can extend it.

    A flat is a published image; a chain is the hard-link snapshot of an image's layers but its last
    (the code layer of a processor), kept so that the next version with new code starts from it.
    """

    dir: str
    index: str
    chain: list[str]


def chain_rel(chain: tuple[str, ...]) -> str:
    return f"{STATE}/chains/" + hashlib.sha256("\n".join(chain).encode()).hexdigest()


@dataclass
class PublishResult:
    publication: Publication
    noop: bool
    seconds: float
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _who() -> str:
    user = os.environ.get("GITLAB_USER_LOGIN") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def published(profile: Profile, repository: str, tag: str) -> Publication | None:
    """The publication of `<repository>:<tag>` in the profile's tree, or None if it is not complete there
    (its metadata, and its tag link to its flat: a run killed between the two published nothing)."""
    root = backend_for(profile).root
    meta = root / metadata_rel(profile.registry.url, repository, tag)
    data = _read_json(meta / PUBLICATION)
    if data is None or not (meta / MANIFEST).is_file():
        return None
    try:
        found = Publication.model_validate(data)
    except ValidationError:
        return None
    link = tag_rel(profile.registry.url, repository, tag)
    if not os.path.islink(root / link) or os.readlink(root / link) != link_to(link, found.flat):
        return None
    return found


def known_trees(root: Path) -> list[FlatInfo]:
    """Every flat and chain snapshot of the tree that is complete (directory and index present)."""
    found = []
    for path in sorted([*(root / STATE / "flats").glob("*.json"), *(root / STATE / "chains").glob("*.json")]):
        try:
            info = FlatInfo.model_validate(_read_json(path))
        except ValidationError:
            continue
        if (root / info.dir).is_dir() and (root / info.index).is_file():
            found.append(info)
    return found


def _base_for(root: Path, image: Image, layers: bool) -> FlatInfo | None:
    """The flat or chain whose layer chain is the longest prefix of this image's (with `.layers` of
    those layers written, when they are wanted: a publish writes only the layers it applies)."""
    best: FlatInfo | None = None
    for info in known_trees(root):
        n = len(info.chain)
        if tuple(info.chain) != image.chain[:n] or (best is not None and n <= len(best.chain)):
            continue
        if not layers or all(_layer_complete(root, layer) for layer in image.layers[:n]):
            best = info
    return best


def _layer_complete(root: Path, layer: Layer) -> bool:
    return (root / layerfs_rel(layer.digest)).is_dir() and (root / layer_index_rel(layer.digest)).is_file()


def _complete(root: Path, image: Image, layers: bool) -> bool:
    """The image's flat is published (and its `.layers`, when they are wanted)."""
    flat = (root / flat_rel(image.config_hex)).is_dir() and (root / index_rel(image.config_hex)).is_file()
    return flat and (not layers or all(_layer_complete(root, layer) for layer in image.layers))


def _build_flat(
    txn: Transaction,
    image: Image,
    source: RegistryClient,
    base: FlatInfo | None,
    base_index: Future[Index] | None,
    root: Path,
    log: Log,
    layers: bool,
    limits: Limits,
) -> Stats:
    """The flat in `txn`, from `base` (whose index is being parsed meanwhile) and the layers it lacks."""
    target = flat_rel(image.config_hex)
    work = txn.new_tree(target, base.dir if base else None)
    index = base_index.result() if base_index else Index()
    tree = Tree(index, work, limits=limits)
    done = len(base.chain) if base else 0
    if base:
        log(f"starting from {base.dir}: {len(image.layers) - done} of {len(image.layers)} layers to apply")
    snapshot: tuple[str, set[str]] | None = None
    for n, layer in enumerate(image.layers[done:], start=done + 1):
        if n == len(image.layers) and n - done >= 2 and _keep_chain(txn, root, tree, image.chain[:-1], work):
            snapshot = (chain_rel(image.chain[:-1]), index.changed)
            index.changed = set()  # from here: what the last layer changes
        log(f"applying layer {layer.digest} ({layer.size / 1e6:.1f} MB)")
        layerfs = None
        if layers and not _layer_complete(root, layer):
            layerfs = Tree(Index(), txn.new_tree(layerfs_rel(layer.digest), None), markers=txn.markers)
        with source.blob(image.repository, layer.digest) as stream:
            apply_layer(tree, stream, layer.digest, layerfs)
        if layerfs is not None:
            _place_layer(txn, root, layer, layerfs)
    add_runtime_files(tree, image)
    changed = index.changed | snapshot[1] if snapshot else index.changed
    if base and txn.cloned:  # the clone's other entries are the verified flat's: their listings suffice
        problems = compare_structure(index, work, full=changed, cloned=True)
    else:
        problems = compare(index, work, trusted=root / base.dir if base else None, changed=changed)
    if not problems and snapshot:  # what the chain shares with the flat was just verified
        rel = snapshot[0]
        problems = compare(
            Index.load(txn.root / f"{rel}.index.gz"), txn.root / rel, trusted=work, changed=index.changed
        )
    if problems:
        raise ToolError(
            f"{image.ref}: the flattened tree does not match its layers (nothing published): "
            + "; ".join(problems[:5])
        )
    _record_flat(txn, image, index)
    txn.place_tree(target)
    _bucket_catalog(txn, root, target)
    return tree.stats


def _record_flat(txn: Transaction, image: Image, index: Index) -> None:
    txn.write_file(index_rel(image.config_hex), index.dumps())
    info = FlatInfo(
        dir=flat_rel(image.config_hex), index=index_rel(image.config_hex), chain=list(image.chain)
    )
    txn.write_file(f"{STATE}/flats/{image.config_hex}.json", info.model_dump_json().encode())


def _record_chain(txn: Transaction, rel: str, index: Index, chain: tuple[str, ...]) -> None:
    txn.write_file(f"{rel}.index.gz", index.dumps())
    info = FlatInfo(dir=rel, index=f"{rel}.index.gz", chain=list(chain))
    txn.write_file(f"{rel}.json", info.model_dump_json().encode())


@dataclass
class _Landed:
    """A flat `cvmfs_server ingest` landed, with the checks of it where it landed, still running."""

    plan: stream.Plan
    checks: list[Future[list[str]]]
    ref: str
    root: Path

    def confirm(self) -> None:
        """Wait for the checks; ToolError (nothing published) when a tree does not match its layers."""
        for tree, check in zip(self.plan.trees, self.checks, strict=True):
            if problems := check.result():
                raise ToolError(
                    f"{self.ref}: /{tree.rel} as landed in {self.root} does not match its layers "
                    "(nothing published): " + "; ".join(problems[:5])
                )


def _land_flat(
    backend: Backend,
    landing: contextlib.ExitStack,
    image: Image,
    source: RegistryClient,
    log: Log,
    limits: Limits,
) -> _Landed:
    """A whole new flat (and its chain snapshot) streamed into the backend, its checks where it landed
    started (the metadata's transaction opens meanwhile); removed again when the `landing` stack
    unwinds with an error. The layers are read once, as the backend takes the stream (`stream.stream`);
    an image that reading cannot send as planned is sent again from its plan, by a second reading,
    into a fresh ingest."""
    root = backend.root
    chain = chain_rel(image.chain[:-1]) if len(image.layers) >= 2 else None
    chain = chain if chain is not None and not (root / chain).is_dir() else None
    trees = [flat_rel(image.config_hex), *([chain] if chain else [])]
    planned: list[stream.Plan] = []

    def send_once(out: Writable, parents: list[str]) -> None:
        planned.append(stream.stream(image, source, trees[0], chain, limits, out, parents, log))

    try:
        landing.enter_context(backend.landed(trees, send_once, log))
    except stream.ReadAgain as again:
        log(f"{again.why}: sending it again from its plan")
        planned.append(again.plan)

        def send_again(out: Writable, parents: list[str]) -> None:
            stream.send(planned[0], image, source, out, parents, log)

        landing.enter_context(backend.landed(trees, send_again, log))
    flat = planned[0].trees[0]

    def check(tree: stream.PlannedTree) -> list[str]:
        if tree is flat:
            return compare_structure(tree.index, root / tree.rel)
        # what the chain has as the flat has it is checked there: its listings suffice
        own = {path for path, entry in tree.index.entries.items() if flat.index.get(path) != entry}
        return compare_structure(tree.index, root / tree.rel, full=own, cloned=True)

    # both wait on lookups through FUSE; an error unwinds this pool (the checks end) before the landing
    pool = landing.enter_context(ThreadPoolExecutor(max_workers=2, thread_name_prefix="landed-check"))
    return _Landed(planned[0], [pool.submit(check, tree) for tree in planned[0].trees], image.ref, root)


def _record_landed(txn: Transaction, root: Path, image: Image, planned: stream.Plan) -> None:
    """The indexes and records of what `_land_flat` landed, in the transaction of the metadata."""
    flat, *chains = planned.trees
    for chain in chains:
        _record_chain(txn, chain.rel, chain.index, image.chain[:-1])
    _record_flat(txn, image, flat.index)
    _bucket_catalog(txn, root, flat.rel)


def _bucket_catalog(txn: Transaction, root: Path, rel: str) -> None:
    bucket = os.path.dirname(rel)
    if not (root / bucket / CATALOG).exists():
        txn.write_file(f"{bucket}/{CATALOG}", b"")


def _place_layer(txn: Transaction, root: Path, layer: Layer, layerfs: Tree) -> None:
    """Check one `.layers/…/layerfs` against its index, then put it, its index and its catalogs in place."""
    assert layerfs.root is not None
    problems = compare(layerfs.index, layerfs.root)
    if problems:
        raise ToolError(
            f"layer {layer.digest}: its layerfs does not match the layer (nothing published): "
            + "; ".join(problems[:5])
        )
    txn.write_file(layer_index_rel(layer.digest), layerfs.index.dumps())
    txn.place_tree(layerfs_rel(layer.digest))
    txn.write_file(f"{layer_rel(layer.digest)}/{CATALOG}", b"")
    _bucket_catalog(txn, root, layer_rel(layer.digest))


def _keep_chain(txn: Transaction, root: Path, tree: Tree, chain: tuple[str, ...], work: Path) -> bool:
    """Snapshot the layers below the last one (hard links: no data is copied); False if it exists."""
    rel = chain_rel(chain)
    if (root / rel).is_dir():
        return False
    txn.copy_tree(work, rel)
    _record_chain(txn, rel, tree.index, chain)
    return True


def repository_of(profile: Profile, image: str) -> tuple[str, str]:
    """`name:tag`, `project/name:tag` or `<registry>/project/name:tag` → (repository, tag)."""
    image = image.removeprefix(profile.registry.url + "/")
    repository, _, tag = image.rpartition(":")
    if not repository or not tag or "/" in tag or "@" in image:
        raise InputError(f"{image}: expected a processor directory or an image as [project/]name:tag")
    return (repository if "/" in repository else f"{profile.registry.project}/{repository}"), tag


def publish(
    profile: Profile,
    image_ref: str,
    *,
    skip_reason: str | None = None,
    log: Log = lambda _: None,
    source: RegistryClient | None = None,
) -> PublishResult:
    """Publish an image as the registry serves it; a no-op when that digest is published already.

    Refuses an image the registry does not have (exit 2) and one whose scan did not pass (exit 3)
    unless `skip_reason` says why; the status and the reason are recorded with the publication.
    """
    started = time.monotonic()
    repository, tag = repository_of(profile, image_ref)
    with contextlib.ExitStack() as stack:
        if source is None:
            source = stack.enter_context(RegistryClient.from_profile(profile))
        if source.find_manifest(repository, tag) is None:
            raise InputError(
                f"{profile.registry.url}/{repository}:{tag} was never pushed: push it first (imagekit push)"
            )
        image = fetch_image(source, profile.registry.url, repository, tag)
        scan_status = _scan_gate(profile, source, image, skip_reason)
        try:
            return _publish(profile, image, source, scan_status, skip_reason, log, started)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise ToolError(
                f"no space left in {backend_for(profile).root} while publishing {image.ref}: the publication "
                "was aborted, nothing of it is kept; free space there or move cvmfs.root to a larger disk"
            ) from exc


def _scan_gate(profile: Profile, source: RegistryClient, image: Image, skip_reason: str | None) -> str:
    """The scan the registry records for the digest (what push attached), else the local record of
    the config digest; a Docker-built image's pushed config digest is not its local image id."""
    pushed = read_scan(source, image.repository, image.manifest.digest)
    if pushed.status in (PASSED, PASSED_UNCHECKED) and not pushed.skipped and not skip_reason:
        return pushed.status
    return require_passed(image.config_digest, profile.data_dir, skip_reason=skip_reason)


def _publish(
    profile: Profile,
    image: Image,
    source: RegistryClient,
    scan_status: str,
    skip_reason: str | None,
    log: Log,
    started: float,
) -> PublishResult:
    repository, tag = image.repository, image.tag
    backend = backend_for(profile)
    with backend.lock(log):
        backend.recover(log)
        root = backend.root
        meta = metadata_rel(image.registry, repository, tag)
        link = tag_rel(image.registry, repository, tag)
        flat = flat_rel(image.config_hex)
        done = published(profile, repository, tag)
        if done is not None and done.manifest_digest != image.manifest.digest:
            raise PolicyError(
                f"{image.ref} is published as {done.manifest_digest}; the registry now serves "
                f"{image.manifest.digest} (a published version never changes)"
            )
        layers = profile.cvmfs.layers
        complete = _complete(root, image, layers)
        if (
            done is not None
            and complete
            and os.path.islink(root / link)
            and os.readlink(root / link) == link_to(link, flat)
        ):
            return PublishResult(done, noop=True, seconds=time.monotonic() - started)
        _require_cvmfs_root(backend)
        backend.prepare(log, layers)
        # a flat lacking the wanted .layers is built again whole: a layerfs is written as its layer is applied
        base = None if complete or (root / flat).is_dir() else _base_for(root, image, layers)
        template = (base.dir, flat) if base else None
        limits = Limits(profile.cvmfs.max_entries, profile.cvmfs.max_bytes)
        whole = not complete and base is None and not layers and not os.path.lexists(root / flat)
        stats = Stats()
        with ThreadPoolExecutor(max_workers=1) as pool, contextlib.ExitStack() as landing:
            # the base's index is read before the transaction (which remounts the tree) and parsed as it opens
            base_index = pool.submit(Index.loads, (root / base.index).read_bytes()) if base else None
            landed = (
                _land_flat(backend, landing, image, source, log, limits)
                if whole and backend.streams
                else None
            )
            if landed is not None:
                stats = landed.plan.stats
            with backend.transaction(log, template) as txn:
                if landed is not None:
                    _record_landed(txn, root, image, landed.plan)
                elif not complete:
                    stats = _build_flat(txn, image, source, base, base_index, root, log, layers, limits)
                else:
                    log(f"{flat} is already published: only the tag is added")
                if not (root / ".cvmfsdirtab").exists():
                    txn.write_file(".cvmfsdirtab", data_path("cvmfs/cvmfsdirtab").read_bytes())
                revision = backend.revision()
                publication = Publication(
                    registry=image.registry,
                    repository=repository,
                    tag=tag,
                    manifest_digest=image.manifest.digest,
                    config_digest=image.config_digest,
                    flat=flat,
                    backend=backend.name,
                    revision=(revision.number + 1) if revision else None,
                    published_at=datetime.now(UTC).isoformat(timespec="seconds"),
                    published_by=_who(),
                    incremental_from=base.dir if base else None,
                    layers_applied=len(image.layers) - (len(base.chain) if base else 0)
                    if stats.entries_written
                    else 0,
                    entries_written=stats.entries_written,
                    bytes_written=stats.bytes_written,
                    scan_status=scan_status,
                    skip_scan_reason=skip_reason,
                )
                files = {
                    "config.json": image.config_raw,
                    "layers.json": json.dumps([layer.__dict__ for layer in image.layers], indent=2).encode(),
                    PUBLICATION: publication.model_dump_json(indent=2).encode(),
                }
                if image.index is not None:
                    files["index.json"] = image.index.raw
                files[MANIFEST] = image.manifest.raw
                if landed is not None:
                    landed.confirm()  # the metadata and the tag only for a flat found as it was sent
                txn.write_dir(meta, files)
                txn.symlink(link, link_to(link, flat))
        final = backend.revision()
        if final is not None and final.number != publication.revision:
            publication = publication.model_copy(
                update={"revision": final.number, "published_at": final.time}
            )
        return PublishResult(
            publication,
            noop=False,
            seconds=time.monotonic() - started,
            skipped=stats.skipped,
            warnings=stats.warnings,
        )


def _require_cvmfs_root(backend: Backend) -> None:
    if backend.name == "local":
        backend.root.mkdir(parents=True, exist_ok=True)
    elif not backend.root.is_dir():
        raise ToolError(f"{backend.root} is not mounted: is {backend.repository} created on this publisher?")


def revision(profile: Profile) -> Revision | None:
    return backend_for(profile).revision()


def move_channel(
    profile: Profile, name: str, channel: str, image_ref: str, log: Log = lambda _: None
) -> str | None:
    """Point `<registry>/<project>/<name>:<channel>` at a published version; returns the version it
    pointed to before (None if it was not set). The version must be published here."""
    if channel not in profile.release.channels:
        raise InputError(f"'{channel}' is not a channel of this site ({', '.join(profile.release.channels)})")
    version = image_ref.rpartition(":")[2] if ":" in image_ref else image_ref
    repository = f"{profile.registry.project}/{name}"
    backend = backend_for(profile)
    link = tag_rel(profile.registry.url, repository, channel)
    target = link_to(link, tag_rel(profile.registry.url, repository, version))
    with backend.lock(log):
        backend.recover(log)  # first: an interrupted publication of this version is undone
        if published(profile, repository, version) is None:
            raise InputError(f"{profile.registry.url}/{repository}:{version} is not published to CVMFS")
        full = backend.root / link
        previous = os.readlink(full) if os.path.islink(full) else None
        if previous != target:
            with backend.transaction(log) as txn:
                txn.symlink(link, target)
    return previous.rpartition(":")[2] if previous else None


def channel_version(profile: Profile, name: str, channel: str) -> str | None:
    """The version `<registry>/<project>/<name>:<channel>` points to in the tree, None if unset."""
    link = backend_for(profile).root / tag_rel(
        profile.registry.url, f"{profile.registry.project}/{name}", channel
    )
    return os.readlink(link).rpartition(":")[2] if os.path.islink(link) else None


def clear_channel(profile: Profile, name: str, channel: str, log: Log = lambda _: None) -> None:
    """Remove a channel symlink: how a channel that did not exist before a failed move is put back."""
    backend = backend_for(profile)
    link = tag_rel(profile.registry.url, f"{profile.registry.project}/{name}", channel)
    with backend.lock(log):
        backend.recover(log)
        if os.path.islink(backend.root / link):
            with backend.transaction(log) as txn:
                txn.remove(link)

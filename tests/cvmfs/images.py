"""Images for the CVMFS tests: hand-made OCI layers pushed with the registry client, Docker-built
images copied with skopeo, and the `docker export` of either, read entry by entry."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from imagekit.config import Profile
from imagekit.registry import RegistryClient, read_scan
from imagekit.registry.scanstate import attach_scan
from imagekit.scan.status import PASSED_UNCHECKED

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class E:
    """One tar entry of a hand-made layer."""

    name: str
    kind: str = "f"  # f d l h (hard link) c (char device) p (fifo)
    data: bytes | str = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def layer(*entries: E) -> bytes:
    """An uncompressed tar of the entries, in order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, 1_700_000_000
            payload = None
            if e.kind == "f":
                payload = e.data if isinstance(e.data, bytes) else e.data.encode()
                info.size = len(payload)
            elif e.kind == "d":
                info.type = tarfile.DIRTYPE
            elif e.kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, str(e.data)
            elif e.kind == "h":
                info.type, info.linkname = tarfile.LNKTYPE, str(e.data)
            elif e.kind == "c":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif e.kind == "p":
                info.type = tarfile.FIFOTYPE
            archive.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return out.getvalue()


def push_layers(
    client: RegistryClient,
    repository: str,
    tag: str,
    layers: list[bytes],
    *,
    config: dict[str, object] | None = None,
) -> str:
    """Push an image made of these uncompressed layer tars (gzip'd here); returns the manifest digest."""
    descriptors, diff_ids = [], []
    for raw in layers:
        blob = gzip.compress(raw, mtime=0)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        if not client.has_blob(repository, digest):
            client.upload_blob(repository, digest, blob)
        descriptors.append({"mediaType": OCI_LAYER, "digest": digest, "size": len(blob)})
    body = {
        "architecture": "amd64",
        "os": "linux",
        "config": config or {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_raw = json.dumps(body, sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config_raw).hexdigest()
    client.upload_blob(repository, config_digest, config_raw)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_raw)},
        "layers": descriptors,
    }
    raw = json.dumps(manifest, indent=2).encode()
    return client.put_manifest(repository, tag, raw, OCI_MANIFEST)


def push_scanned_version(profile: Profile, version: str) -> str:
    """A tiny image `proc:<version>` in the profile's registry project, its scan recorded as push
    records it (passed, vulnerabilities not checked); returns its manifest digest."""
    repository = f"{profile.registry.project}/proc"
    base = layer(E("etc", "d", mode=0o755), E("etc/os-release", "f", "ID=test\n"))
    code = layer(E("opt", "d", mode=0o755), E("opt/VERSION", "f", version))
    labels = {"org.opencontainers.image.version": version}
    with RegistryClient.from_profile(profile, push=True) as client:
        digest = push_layers(
            client, repository, version, [base, code], config={"Labels": labels, "Cmd": ["/bin/sh"]}
        )
        manifest = client.find_manifest(repository, digest)
        assert manifest is not None
        attach_scan(
            client, repository, manifest, status=PASSED_UNCHECKED, record=None, reports=None, skip_reason=None
        )
        assert read_scan(client, repository, digest).status == PASSED_UNCHECKED
    return digest


def skopeo_push(image: str, registry: str, repository: str, tag: str) -> None:
    subprocess.run(
        [
            "skopeo", "copy", "--quiet", "--dest-tls-verify=false",
            f"docker-daemon:{image}", f"docker://{registry}/{repository}:{tag}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip


# What `docker create` adds to every container (its init layer); never part of an image.
DOCKER_INIT = {".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab", "dev/console",
               "dev/pts", "dev/shm", "proc", "sys"}  # fmt: skip
# What imagekit adds to every flat (DUCC's runtime files and bind points).
IMAGEKIT_ADDED = (".singularity.d", ".cvmfscatalog", "cvmfs", "srv", "dev", "proc", "sys", "tmp", "var/tmp",
                  "home", "var")  # fmt: skip

Row = tuple[str, int, int, int, int, str]


def export_rows(docker: str, image: str) -> dict[str, Row]:
    """`docker export` of a container of `image`: path → (type, mode, uid, gid, size, sha256 or target)."""
    created = subprocess.run(
        [docker, "create", image, "/nonexistent"], capture_output=True, text=True, check=True
    )
    container = created.stdout.strip()
    rows: dict[str, Row] = {}
    try:
        export = subprocess.Popen([docker, "export", container], stdout=subprocess.PIPE)
        assert export.stdout is not None
        with tarfile.open(fileobj=export.stdout, mode="r|") as archive:
            for member in archive:
                name = member.name.strip("/").removeprefix("./")
                if not name:
                    continue
                if member.islnk():
                    rows[name] = rows[member.linkname.strip("/")]
                    continue
                kind = "d" if member.isdir() else "l" if member.issym() else "f" if member.isreg() else "?"
                detail = member.linkname if member.issym() else ""
                if member.isreg():
                    source = archive.extractfile(member)
                    assert source is not None
                    detail = hashlib.sha256(source.read()).hexdigest()
                size = member.size if member.isreg() else 0
                rows[name] = (
                    kind,
                    member.mode & 0o7777 if kind != "l" else 0,
                    member.uid,
                    member.gid,
                    size,
                    detail,
                )
        export.wait()
    finally:
        subprocess.run([docker, "rm", "-f", container], capture_output=True, check=False)
    return rows


def tree_rows(root: Path) -> dict[str, Row]:
    """The same rows for a directory on disk, never following a symlink."""
    rows: dict[str, Row] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            full = Path(dirpath) / name
            st = os.lstat(full)
            rel = str(full.relative_to(root))
            if stat.S_ISDIR(st.st_mode):
                kind, detail = "d", ""
            elif stat.S_ISLNK(st.st_mode):
                kind, detail = "l", os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                kind, detail = "f", hashlib.sha256(full.read_bytes()).hexdigest()
            else:
                kind, detail = "?", ""
            mode = stat.S_IMODE(st.st_mode) if kind != "l" else 0
            rows[rel] = (kind, mode, st.st_uid, st.st_gid, st.st_size if kind == "f" else 0, detail)
    return rows


def inode_groups(root: Path) -> set[frozenset[str]]:
    """Sets of paths that are hard links of one another (2 or more names)."""
    groups: dict[int, set[str]] = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            full = Path(dirpath) / name
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                groups.setdefault(st.st_ino, set()).add(str(full.relative_to(root)))
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def differences(exported: dict[str, Row], flat: dict[str, Row], skipped: set[str]) -> list[str]:
    """Every path where the flat tree and the export disagree, beyond the known additions."""
    found = []
    for path in sorted(set(exported) | set(flat)):
        top = path.split("/")[0]
        if path in DOCKER_INIT or path in skipped:
            continue
        if path not in exported:
            if top == ".singularity.d" or path in IMAGEKIT_ADDED:
                continue
            found.append(f"only in the flat: {path} {flat[path]}")
        elif path not in flat:
            if path in ("dev", "etc") and exported[path][0] == "d":
                continue  # created by Docker's init layer in an image without them
            found.append(f"only in the export: {path} {exported[path]}")
        elif exported[path] != flat[path]:
            found.append(f"{path}: export {exported[path]} != flat {flat[path]}")
    return found

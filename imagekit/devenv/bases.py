"""Bootstrap the catalog's base images from the Debian mirror (no Docker Hub needed).

mmdebstrap writes a root filesystem tarball, the engine imports it, the registry stores it, and the
digest the registry answers is recorded for this site. SOURCE_DATE_EPOCH is fixed so the tarball
itself is reproducible.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import httpx

from imagekit.catalog import (
    BaseProfile,
    BaseRef,
    bootstrap_repository,
    load_catalog,
    record_base,
    recorded_bases,
)
from imagekit.config import Profile
from imagekit.devenv.services import Log
from imagekit.engines.docker import docker_client
from imagekit.errors import ToolError

MANIFEST_TYPES = ",".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)
# 2023-06-10, the release of Debian 12: the epoch for every file mtime in the bootstrapped tree.
BOOTSTRAP_EPOCH = "1686355200"


def _registry_has(profile: Profile, ref: BaseRef) -> bool:
    scheme = "http" if profile.registry.insecure else "https"
    repository = ref.image.split("/", 1)[1]
    try:
        response = httpx.head(
            f"{scheme}://{profile.registry.url}/v2/{repository}/manifests/{ref.digest}",
            headers={"Accept": MANIFEST_TYPES},
            timeout=10,
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _mirror(profile: Profile) -> str:
    return profile.site.apt_mirror or "http://deb.debian.org/debian"


def apt_sources(mirror: str, suite: str) -> list[str]:
    """The suite with its point-release updates and its security archive, so bases start patched."""
    security = mirror.rstrip("/") + "-security" if mirror.rstrip("/").endswith("/debian") else ""
    sources = [f"deb {mirror} {suite} main", f"deb {mirror} {suite}-updates main"]
    if security:
        sources.append(f"deb {security} {suite}-security main")
    return sources


def recipe(profile: Profile, entry: BaseProfile) -> str:
    """Hash of everything that decides a bootstrapped base's content."""
    assert entry.bootstrap is not None
    spec = entry.bootstrap
    made_of = [spec.variant, spec.suite, *sorted(spec.include), *apt_sources(_mirror(profile), spec.suite)]
    return hashlib.sha256("\n".join(made_of).encode()).hexdigest()


def bootstrap_one(profile: Profile, name: str, entry: BaseProfile, log: Log) -> BaseRef:
    """mmdebstrap -> docker import -> push; returns the pinned reference."""
    assert entry.bootstrap is not None
    spec = entry.bootstrap
    repository = bootstrap_repository(profile.registry.url, profile.registry.project, name)
    tag = f"{repository}:{spec.suite}"
    work = profile.data_dir / "dev" / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tarball = Path(tmp) / f"{name}.tar"
        command = ["mmdebstrap", f"--variant={spec.variant}", "--format=tar"]
        if spec.include:
            command.append("--include=" + ",".join(spec.include))
        command += [spec.suite, str(tarball), *apt_sources(_mirror(profile), spec.suite)]
        log(f"bootstrapping base {name} from {_mirror(profile)} ({spec.suite}, {spec.variant})")
        env = {**os.environ, "SOURCE_DATE_EPOCH": BOOTSTRAP_EPOCH}
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-8:])
            raise ToolError(f"mmdebstrap failed for base {name} (exit {result.returncode}):\n{tail}")
        docker = docker_client(profile)
        docker.image.import_(tarball, tag=tag, changes=['CMD ["/bin/bash"]'])
    log(f"pushing {tag}")
    docker.image.push(tag, quiet=True)
    repo_digests = docker.image.inspect(tag).repo_digests
    digest = next((d.split("@", 1)[1] for d in repo_digests if d.startswith(repository + "@")), "")
    if not digest:
        raise ToolError(f"pushed {tag} but the engine reports no digest for {repository}")
    return BaseRef(image=repository, digest=digest, recipe=recipe(profile, entry))


def ensure_bases(profile: Profile, log: Log) -> dict[str, BaseRef]:
    """Bootstrap every catalog base that this site has no live, current digest for; idempotent."""
    records = recorded_bases(profile.data_dir)
    ensured: dict[str, BaseRef] = {}
    for name, entry in sorted(load_catalog().profiles.items()):
        if entry.bootstrap is None:
            continue
        expected = bootstrap_repository(profile.registry.url, profile.registry.project, name)
        known = records.get(name)
        current = (
            known is not None
            and known.image == expected
            and known.recipe == recipe(profile, entry)
            and _registry_has(profile, known)
        )
        if known is not None and current:
            ensured[name] = known
            continue
        ref = bootstrap_one(profile, name, entry, log)
        record_base(profile.data_dir, name, ref)
        ensured[name] = ref
    return ensured

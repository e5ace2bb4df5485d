"""Bootstrap the catalog's base images from the site's Debian mirror (no Docker Hub needed).

mmdebstrap writes a root filesystem tarball from the mirror the host's apt sources name (or
`site.apt_mirror`), /dev is emptied (device nodes belong to the runtime, and a CVMFS tree must not
carry them), the engine imports it, the registry stores it, and the digest the registry answers is
recorded for this site. SOURCE_DATE_EPOCH is fixed so the tarball itself is reproducible.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import IO

import httpx
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.exceptions import DockerException

from imagekit.catalog import (
    BaseProfile,
    BaseRef,
    load_catalog,
    record_base,
    recorded_bases,
    site_repository,
)
from imagekit.config import Profile
from imagekit.devenv.services import Log
from imagekit.engines.docker import docker_client
from imagekit.errors import ToolError
from imagekit.mirror import DebianMirror, site_mirror

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


DEV_EXCLUDED = "/dev/*"
"""What the tarball leaves out: every entry below /dev, keeping the empty directory."""


def _mirror(profile: Profile, entry: BaseProfile) -> DebianMirror:
    return site_mirror(profile.site.apt_mirror, entry.suite)


def recipe(profile: Profile, entry: BaseProfile) -> str:
    """Hash of everything that decides a bootstrapped base's content."""
    assert entry.bootstrap is not None
    spec = entry.bootstrap
    sources = _mirror(profile, entry).sources(entry.suite)
    made_of = [spec.variant, entry.suite, *sorted(spec.include), *sources, f"exclude {DEV_EXCLUDED}"]
    return hashlib.sha256("\n".join(made_of).encode()).hexdigest()


def _run(
    command: list[str],
    what: str,
    *,
    env: dict[str, str] | None = None,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
) -> None:
    """Run a bootstrap step; a failure says which step and ends with the tool's own last lines."""
    try:
        result = subprocess.run(
            command,
            env=env,
            stdin=stdin,
            stdout=stdout or subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
    except OSError as exc:
        raise ToolError(f"{what}: cannot run {command[0]}: {exc} (imagekit dev up installs it)") from exc
    if result.returncode != 0:
        tail = "\n".join(result.stderr.decode(errors="replace").strip().splitlines()[-8:])
        raise ToolError(f"{what} failed (exit {result.returncode}):\n{tail}")


def _engine_failure(step: str, exc: Exception) -> ToolError:
    """A python-on-whales failure as one clear line: the step, and the engine's own message."""
    if isinstance(exc, DockerException):
        said = (exc.stderr or exc.stdout or "").strip().splitlines()
        detail = said[-1] if said else f"exit {exc.return_code}"
        return ToolError(f"{step} failed: {detail}")
    return ToolError(f"{step} failed: the docker client is missing ({exc}); run `imagekit dev up`")


def bootstrap_one(profile: Profile, name: str, entry: BaseProfile, log: Log) -> BaseRef:
    """mmdebstrap -> /dev emptied -> docker import -> push; returns the pinned reference."""
    assert entry.bootstrap is not None
    spec = entry.bootstrap
    mirror = _mirror(profile, entry)
    repository = site_repository(profile.registry.url, profile.registry.project, name)
    tag = f"{repository}:{entry.suite}"
    work = profile.data_dir / "dev" / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        raw, tarball = Path(tmp) / f"{name}.raw.tar", Path(tmp) / f"{name}.tar"
        command = ["mmdebstrap", f"--variant={spec.variant}", "--format=tar"]
        if spec.include:
            command.append("--include=" + ",".join(spec.include))
        command += [entry.suite, str(raw), *mirror.sources(entry.suite)]
        log(f"bootstrapping base {name} ({entry.suite}) from {mirror.archive}, named by {mirror.origin}")
        env = {**os.environ, "SOURCE_DATE_EPOCH": BOOTSTRAP_EPOCH}
        _run(command, f"mmdebstrap for base {name}", env=env)
        with raw.open("rb") as source, tarball.open("wb") as target:
            _run(
                ["mmtarfilter", f"--path-exclude={DEV_EXCLUDED}"],
                f"emptying /dev of base {name} (mmtarfilter)",
                stdin=source,
                stdout=target,
            )
        log(f"importing and pushing {tag}")
        digest = import_and_push(profile, name, tarball, tag)
    return BaseRef(image=repository, digest=digest, recipe=recipe(profile, entry))


def import_and_push(profile: Profile, name: str, tarball: Path, tag: str) -> str:
    """Import a root filesystem tarball as `tag`, push it, and return the digest the registry gave."""
    docker = docker_client(profile)
    repository = tag.rsplit(":", 1)[0]
    try:
        docker.image.import_(tarball, tag=tag, changes=['CMD ["/bin/bash"]'])
    except (DockerException, ClientNotFoundError) as exc:
        raise _engine_failure(f"importing base {name} into the engine", exc) from exc
    try:
        docker.image.push(tag, quiet=True)
        repo_digests = docker.image.inspect(tag).repo_digests
    except (DockerException, ClientNotFoundError) as exc:
        raise _engine_failure(f"pushing base {name} to {profile.registry.url}", exc) from exc
    digest = next((d.split("@", 1)[1] for d in repo_digests if d.startswith(repository + "@")), "")
    if not digest:
        raise ToolError(f"pushed {tag} but the engine reports no digest for {repository}")
    return digest


def ensure_bases(profile: Profile, log: Log) -> dict[str, BaseRef]:
    """Bootstrap every catalog base that this site has no live, current digest for; idempotent."""
    records = recorded_bases(profile.data_dir)
    ensured: dict[str, BaseRef] = {}
    for name, entry in sorted(load_catalog().profiles.items()):
        if entry.bootstrap is None:
            continue
        expected = site_repository(profile.registry.url, profile.registry.project, name)
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

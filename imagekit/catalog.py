"""The base image catalog (`base_templates/catalog.yaml`) and the digests recorded for this site.

The catalog is shipped data; digests are site state: `imagekit dev up` records the digest of each
base it bootstraps, and an operator pins site images, both in `<data_dir>/bases.json`.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

from imagekit.errors import InputError
from imagekit.resources import data_path

DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")


class Bootstrap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    suite: str
    variant: str = "minbase"
    include: tuple[str, ...] = ()


class Trust(BaseModel):
    """How an image of this profile learns to trust the site CA (see base_templates/docker/*.j2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    anchors: str
    """Directory the site CA files are copied into."""
    update: str = ""
    """Command merging the anchors into `bundle`; empty: the base lacks one, so they are appended."""
    bundle: str
    """The system CA bundle; SSL_CERT_FILE, REQUESTS_CA_BUNDLE and PIP_CERT point at it."""


class BaseProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    family: Literal["debian", "el"]
    package_manager: Literal["apt", "dnf"]
    bootstrap: Bootstrap | None = None
    image: str = ""
    tag: str = ""
    python: str = ""
    conda: Literal["", "micromamba"] = ""
    user: str = "root"
    """The user the base image runs as; a non-root one means installs switch to root first."""
    trust: Trust
    apt_sources: tuple[str, ...] = ()
    """apt source files whose Debian mirror the site's apt_mirror replaces."""


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1]
    profiles: dict[str, BaseProfile]


class BaseRef(BaseModel):
    """A base image as a build uses it: repository and the digest it is pinned to."""

    model_config = ConfigDict(frozen=True)
    image: str
    digest: str
    recipe: str = ""
    """For a bootstrapped base: the sha256 of how it was made, so a changed recipe rebuilds it."""

    @property
    def pinned(self) -> str:
        return f"{self.image}@{self.digest}"


@cache
def load_catalog(path: Path | None = None) -> Catalog:
    source = path or data_path("base_templates") / "catalog.yaml"
    return Catalog.model_validate(yaml.safe_load(source.read_text(encoding="utf-8")))


def bootstrap_repository(registry_url: str, project: str, profile_name: str) -> str:
    """Repository a locally bootstrapped base is pushed to."""
    return f"{registry_url}/{project}/base/{profile_name}"


def _records_path(data_dir: Path) -> Path:
    return data_dir / "bases.json"


def recorded_bases(data_dir: Path) -> dict[str, BaseRef]:
    path = _records_path(data_dir)
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {name: BaseRef.model_validate(ref) for name, ref in raw.items()}


def record_base(data_dir: Path, profile_name: str, ref: BaseRef) -> None:
    """Record (atomically) the digest this site uses for a base profile."""
    if not DIGEST_PATTERN.match(ref.digest):
        raise InputError(f"{profile_name}: expected a digest sha256:<64 hex digits>, got '{ref.digest}'")
    records = recorded_bases(data_dir)
    records[profile_name] = ref
    path = _records_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps({k: v.model_dump() for k, v in sorted(records.items())}, indent=2) + "\n",
        encoding="utf-8",
    )
    tmp.replace(path)


def resolve_base(profile_name: str, data_dir: Path) -> BaseRef:
    """The pinned base for a catalog profile, or a clear error saying how to get one."""
    catalog = load_catalog()
    if profile_name not in catalog.profiles:
        raise InputError(f"base profile '{profile_name}' is not in the catalog")
    ref = recorded_bases(data_dir).get(profile_name)
    if ref is None:
        entry = catalog.profiles[profile_name]
        how = (
            "run `imagekit dev up` to bootstrap it from the Debian mirror"
            if entry.bootstrap
            else f"pin your copy of {entry.image}:{entry.tag}: imagekit base pin {profile_name} DIGEST"
        )
        raise InputError(f"base profile '{profile_name}' has no digest recorded on this site: {how}")
    return ref

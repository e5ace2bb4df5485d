"""The base image catalog (`base_templates/catalog.yaml`) and the digests recorded for this site.

The catalog is shipped data; digests are site state: `imagekit dev up` records the digest of each
base it bootstraps, and an operator pins site images, both in `<data_dir>/bases.json`. Every base
lives in the site's own registry, at `site_repository(...)`: no public registry is named here.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

from imagekit.errors import InputError
from imagekit.resources import data_path

DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")


class Bootstrap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
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
    suite: str = ""
    """The Debian suite (bookworm) a Debian-family base is made of; its apt sources name it."""
    bootstrap: Bootstrap | None = None
    upstream: str = ""
    """For a site image (not bootstrapped): what the operator copies into the site's repository; the
    profile's user, Python and sources are written for that image."""
    python: str = ""
    conda: Literal["", "micromamba"] = ""
    user: str = "root"
    """The user the base image runs as; a non-root one means installs switch to root first."""
    trust: Trust
    apt_sources: tuple[str, ...] = ()
    """The base's apt source files, replaced by the site mirror's sources when site.apt_mirror is set."""

    @model_validator(mode="after")
    def _suite_where_needed(self) -> BaseProfile:
        if (self.bootstrap or self.apt_sources) and not self.suite:
            raise ValueError("a bootstrapped base or one with apt_sources needs its Debian suite")
        if not self.bootstrap and not self.upstream:
            raise ValueError("a site image (not bootstrapped) needs `upstream`: what the operator copies")
        return self


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


def site_bases(registry_url: str, project: str) -> str:
    """Where the site keeps its bases: `<registry>/<project>/base`, one repository per profile below."""
    return f"{registry_url}/{project}/base"


def site_repository(registry_url: str, project: str, profile_name: str) -> str:
    """The site's repository of a catalog base: `dev up` pushes bootstrapped bases there, an operator
    copies site images there; so builds pull from the site's registry only."""
    return f"{site_bases(registry_url, project)}/{profile_name}"


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
            else f"copy {entry.upstream} into the site registry's base/{profile_name} repository, then "
            f"imagekit base pin {profile_name} DIGEST (see the operator's guide)"
        )
        raise InputError(f"base profile '{profile_name}' has no digest recorded on this site: {how}")
    return ref

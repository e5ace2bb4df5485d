"""The site profile: where the registry is, which engine builds, where the CVMFS tree lives.

Precedence, per setting: CLI flag > environment (`IMAGEKIT_<SECTION>_<KEY>`) > profile file >
embedded default. With no profile file at all, the embedded defaults work on a single machine:
local Docker engine, registry on 127.0.0.1:5000, CVMFS tree in a local directory.
Credentials are never settings: the profile only names the environment variables holding them.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from imagekit.errors import ProfileError

PROFILE_FILE_NAME = "imagekit.toml"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "imagekit"


def _default_ca_certificates() -> list[str]:
    """Builds trust what the host trusts: a TLS-intercepting site needs its CA inside builds."""
    return [str(HOST_CA_BUNDLE)] if HOST_CA_BUNDLE.is_file() else []


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EngineSettings(_Section):
    name: Literal["docker", "podman", "buildah"] = "docker"
    network: str = "host"
    docker_binary: str = ""
    """Path of the docker client to drive; empty means the first `docker` on PATH."""
    podman_binary: str = ""
    """Path of podman; empty means the first `podman` on PATH."""
    buildah_binary: str = ""
    """Path of buildah; empty means the first `buildah` on PATH."""
    storage_driver: Literal["overlay", "vfs"] = "overlay"
    """buildah's storage: overlay where the kernel allows it, vfs anywhere (slow: a full copy per layer)."""
    registry_cache: bool = False
    """buildah only: reuse layers through `<registry>/<project>/<name>/cache` (`--cache-from/--cache-to`),
    so a runner that starts with empty storage rebuilds only what changed (CI sets it)."""

    @property
    def docker(self) -> str:
        """The docker client to run."""
        return self.docker_binary or "docker"

    @property
    def podman(self) -> str:
        return self.podman_binary or "podman"

    @property
    def buildah(self) -> str:
        return self.buildah_binary or "buildah"


class RegistrySettings(_Section):
    url: str = "127.0.0.1:5000"
    project: str = "imagekit"
    kind: Literal["distribution", "harbor"] = "distribution"
    insecure: bool = True
    """Talk plain HTTP; only ever right for a registry on the loopback interface."""
    username_env: str = "IMAGEKIT_REGISTRY_USERNAME"
    password_env: str = "IMAGEKIT_REGISTRY_PASSWORD"

    @field_validator("url")
    @classmethod
    def _strip_scheme(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        for scheme in ("https://", "http://"):
            if value.startswith(scheme):
                value = value[len(scheme) :]
        if not value:
            raise ValueError("must name a registry host, e.g. 127.0.0.1:5000")
        return value


class CvmfsSettings(_Section):
    backend: Literal["local", "cvmfs_server"] = "local"
    repository: str = "sw.imagekit.local"
    root: str = ""
    """Root of the tree: for `local` empty means `<data_dir>/cvmfs/<repository>`; for `cvmfs_server`
    empty means `/cvmfs/<repository>`."""
    spool_dir: str = "/var/spool/cvmfs"
    """cvmfs_server's spool: its transaction flag and imagekit's lock live in `<spool_dir>/<repository>`."""
    server_binary: str = ""
    """The cvmfs_server to drive; empty means the one on PATH."""
    lock_timeout: float = 600
    """Seconds a publish waits for another imagekit run on the same repository."""
    layers: bool = False
    """Also write `.layers/<d[0:2]>/<d>/layerfs` per compressed layer, for the containerd snapshotter."""
    max_entries: int = Field(default=5_000_000, gt=0)
    """Tar entries one publication may read from its layers; more is refused (a file-count bomb).
    A Python environment alone can hold 100,000 files."""
    max_bytes: int = Field(default=1 << 40, gt=0)
    """Bytes of regular files one publication may read (sparse files count their full size, though
    they are written sparse); more is refused (a size bomb)."""


class SiteSettings(_Section):
    ca_certificates: list[str] = Field(default_factory=_default_ca_certificates)
    apt_mirror: str = ""
    pip_index_url: str = ""


class ScanSettings(_Section):
    trivy_db_repository: str = ""
    policy: str = ""
    """Path of the site-wide scan policy; empty means the policy shipped with imagekit."""
    vulnerability_db: Literal["required", "when-available"] = "required"
    """required: no scan passes without a vulnerability DB. when-available: with no
    trivy_db_repository the rest of the scan still runs, status `passed, vulnerabilities not checked`."""


class ReleaseSettings(_Section):
    channels: list[str] = ["dev", "test", "production"]


class CiSettings(_Section):
    component: str = "$CI_SERVER_FQDN/imagekit/ci-templates/imagekit@1"
    """Where the site publishes imagekit's central CI template; generated pipelines include it."""
    job_image: str = ""
    """The CI job image; empty means `<registry.url>/<registry.project>/imagekit-ci:<imagekit version>`."""


class PathSettings(_Section):
    data_dir: str = ""
    """imagekit's own state (dev environment, base digests, scan results); a cache, deletable."""


class Profile(_Section):
    engine: EngineSettings = EngineSettings()
    registry: RegistrySettings = RegistrySettings()
    cvmfs: CvmfsSettings = CvmfsSettings()
    site: SiteSettings = SiteSettings()
    scan: ScanSettings = ScanSettings()
    release: ReleaseSettings = ReleaseSettings()
    ci: CiSettings = CiSettings()
    paths: PathSettings = PathSettings()

    @property
    def data_dir(self) -> Path:
        return Path(self.paths.data_dir) if self.paths.data_dir else default_data_dir()

    @property
    def cvmfs_root(self) -> Path:
        if self.cvmfs.root:
            return Path(self.cvmfs.root)
        return self.data_dir / "cvmfs" / self.cvmfs.repository

    def credential_env_names(self) -> set[str]:
        return {self.registry.username_env, self.registry.password_env}


SECTIONS: dict[str, type[_Section]] = {
    name: info.annotation  # type: ignore[misc]
    for name, info in Profile.model_fields.items()
}


@dataclass
class LoadedProfile:
    """The effective profile and, for every setting, where its value came from."""

    profile: Profile
    sources: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def show(self) -> list[tuple[str, str, str]]:
        """(setting, value, source) rows with secrets masked, for `imagekit config show`."""
        rows = []
        for section in SECTIONS:
            values = getattr(self.profile, section).model_dump()
            for key, value in values.items():
                name = f"{section}.{key}"
                shown = ", ".join(value) if isinstance(value, list) else str(value)
                if key.endswith("_env"):
                    state = "set" if self.env.get(str(value)) else "unset"
                    shown = f"{value} ({state}, value never shown)"
                rows.append((name, shown, self.sources.get(name, "default")))
        return rows


PATH_SETTINGS = frozenset({"site.ca_certificates", "paths.data_dir", "scan.policy", "cvmfs.root"})
"""Settings naming files or directories. Like every `<section>.<name>_binary` given with a '/', their
relative values are made absolute once, at loading: against the profile file's directory for values
from the file, against the working directory for environment and flag values. No consumer resolves."""


def _is_path(dotted: str, value: str) -> bool:
    return dotted in PATH_SETTINGS or (dotted.endswith("_binary") and "/" in value)


def _absolute(dotted: str, value: Any, base: Path) -> Any:
    """`value` with relative paths made absolute against `base`; "" (the default) stays ""."""
    if isinstance(value, list):
        return [_absolute(dotted, item, base) for item in value]
    if not isinstance(value, str) or not value or not _is_path(dotted, value):
        return value
    return os.path.normpath(base / Path(value).expanduser())


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def find_profile_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """--profile, then IMAGEKIT_PROFILE, then ./imagekit.toml, then $XDG_CONFIG_HOME/imagekit/."""
    chosen = explicit or env.get("IMAGEKIT_PROFILE")
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise ProfileError(f"{path}: profile file not found")
        return path
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    for candidate in (Path.cwd() / PROFILE_FILE_NAME, config_home / "imagekit" / PROFILE_FILE_NAME):
        if candidate.is_file():
            return candidate
    return None


def _read_profile_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from exc
    for section, body in data.items():
        if section not in SECTIONS:
            raise ProfileError(f"{path}: unknown section [{section}]{_suggest(section, list(SECTIONS))}")
        if not isinstance(body, dict):
            raise ProfileError(f"{path}: '{section}' must be a table, e.g. [{section}]")
        known = list(SECTIONS[section].model_fields)
        for key in body:
            if key not in known:
                raise ProfileError(f"{path}: [{section}] unknown key '{key}'{_suggest(key, known)}")
    return data


def _env_value(raw: str, annotation: Any) -> Any:
    if annotation == list[str]:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _read_environment(env: Mapping[str, str], exempt: set[str]) -> dict[str, dict[str, tuple[str, Any]]]:
    """IMAGEKIT_<SECTION>_<KEY> variables, as {section: {key: (variable, value)}}."""
    found: dict[str, dict[str, tuple[str, Any]]] = {}
    for variable, raw in env.items():
        if not variable.startswith("IMAGEKIT_") or variable in exempt:
            continue
        rest = variable[len("IMAGEKIT_") :].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            continue
        key = rest[len(section) + 1 :]
        fields = SECTIONS[section].model_fields
        if key not in fields:
            options = [f"IMAGEKIT_{section.upper()}_{k.upper()}" for k in fields]
            raise ProfileError(f"environment: unknown setting {variable}{_suggest(variable, options)}")
        found.setdefault(section, {})[key] = (variable, _env_value(raw, fields[key].annotation))
    return found


def load_profile(
    explicit_file: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> LoadedProfile:
    """Merge embedded defaults, the profile file, the environment and CLI flags ("section.key")."""
    env = os.environ if env is None else env
    path = find_profile_file(explicit_file, env)
    merged: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    if path is not None:
        here = path.parent.absolute()
        for section, body in _read_profile_file(path).items():
            for key, value in body.items():
                merged.setdefault(section, {})[key] = _absolute(f"{section}.{key}", value, here)
                sources[f"{section}.{key}"] = f"profile {path}"
    registry_file = merged.get("registry", {})
    defaults = RegistrySettings()
    exempt = {
        "IMAGEKIT_PROFILE",
        defaults.username_env,
        defaults.password_env,
        str(registry_file.get("username_env", defaults.username_env)),
        str(registry_file.get("password_env", defaults.password_env)),
    }
    for section, body in _read_environment(env, exempt).items():
        for key, (variable, value) in body.items():
            merged.setdefault(section, {})[key] = _absolute(f"{section}.{key}", value, Path.cwd())
            sources[f"{section}.{key}"] = f"environment {variable}"
    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        merged.setdefault(section, {})[key] = _absolute(dotted, value, Path.cwd())
        sources[dotted] = "command line"
    try:
        profile = Profile.model_validate(merged)
    except ValidationError as exc:
        error = exc.errors()[0]
        dotted = ".".join(str(part) for part in error["loc"])
        origin = sources.get(dotted, "profile")
        raise ProfileError(f"{origin}: {dotted}: {error['msg']}") from exc
    return LoadedProfile(profile=profile, sources=sources, file=path, env=env)

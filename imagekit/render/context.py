"""The render context: everything the templates need, computed from the manifest without I/O.

`render_context` is a pure function of the manifest, the pinned base, the site settings and the
source revision (it reads only the shipped catalog), so what a Dockerfile will say is testable as
data. Every problem it finds names the manifest field (or site setting) at fault.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from imagekit.catalog import DIGEST_PATTERN, BaseProfile, BaseRef, load_catalog
from imagekit.config import SiteSettings
from imagekit.errors import InputError
from imagekit.manifest import LoadedManifest
from imagekit.manifest.model import CopySpec, Processor, SmokeTest
from imagekit.manifest.rules import (
    SITE_DIR,
    archive_name_problem,
    context_path_problem,
    cots_archive_name,
    cots_url_problem,
    env_value_problem,
    image_profile,
    is_remote,
    label_key_problem,
    one_line_problem,
    python_problem,
    shell_command_problem,
    unknown_image_problem,
)
from imagekit.mirror import mirror_from_setting
from imagekit.render.repack import Placement
from imagekit.render.source import SourceInfo

VENV = "/opt/venv"
LOCK_DIR = "/opt/imagekit"
"""Where the dependency lock is kept in the image, so the image says what it was installed from."""
APT_LIST = "/etc/apt/sources.list"
COTS_DOWNLOADS = "/tmp/cots"
COTS_STAGING = "/out"
COTS_CONTEXT = "cots"
"""Where the build context holds each local COTS, repacked as `<name>.tar` for `ADD <tar> /`."""
DEFAULT_USER_NAME = "processor"
CACHE_PATTERNS = (
    ".git",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
    "*.pyc",
    "__pycache__",
)
"""Never part of a build context: local caches would change layers without a source change."""
_MIRROR = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~%/+-]*)?$")

FIELD_OF: dict[str, str] = {
    "base_image": "base",
    "package_manager": "base.profile",
    "python_env": "base.profile",
    "trust": "site.ca_certificates",
    "mirrors": "site.apt_mirror / site.pip_index_url",
    "runtime_packages": "system_packages.runtime",
    "cots": "cots",
    "python_deps": "dependencies.python",
    "builder": "build",
    "workdir": "runtime.workdir",
    "app_copies": "app.copy",
    "app_install": "app.install",
    "env": "runtime.env",
    "user": "runtime.user",
    "entrypoint": "runtime.entrypoint",
    "labels": "labels",
    "tests": "tests",
}
"""The manifest field behind each context field, for template errors."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Repack(_Frozen):
    """How render() rewrites a local COTS archive: placed as `tar -xf --strip-components` would."""

    sha256: str
    """Checked while repacking, so a wrong COTS checksum fails before any build."""
    extract_to: str
    strip_components: int

    @property
    def placement(self) -> Placement:
        return Placement(self.extract_to, self.strip_components)


class ContextFile(_Frozen):
    """A file or folder of the build context, and where render() copies it from."""

    path: str
    """Path inside the build context (the same relative path as in the processor directory, or
    cots/<name>.tar for a repacked COTS archive)."""
    source: str
    """Path relative to the processor directory, or an absolute host path for a site CA file."""
    field: str
    """The manifest field or site setting that named it."""
    repack: Repack | None = None
    """Set for a local COTS archive, which is repacked rather than copied."""


class CopyStep(_Frozen):
    source: str
    """Path inside the build context."""
    dest: str
    """Absolute path in the image."""


class Trust(_Frozen):
    files: list[str]
    """Site CA files in the build context (site/ca-N.crt)."""
    anchors: str
    installed: list[str]
    """The same files in the image, under `anchors`."""
    update: str
    bundle: str


class Mirrors(_Frozen):
    apt: str = ""
    apt_file: str = ""
    apt_lines: list[str] = []
    """With site.apt_mirror set: the sources written to `apt_file`, as in the bootstrapped bases."""
    apt_removed: list[str] = []
    """The base's other apt source files, removed so only the site mirror is used."""
    pip_index_url: str = ""


class Cots(_Frozen):
    """A local COTS is ADDed from its repacked tar; a remote one is downloaded, checked and unpacked
    in a stage of its own (`stage`, `archive`, `staged` are set for it alone)."""

    name: str
    version: str
    license: str
    source: str
    """The repacked tar inside the build context, or an https URL the engine downloads."""
    remote: bool
    sha256: str
    extract_to: str
    strip_components: int
    env: dict[str, str]
    stage: str = ""
    archive: str = ""
    """Path of the downloaded archive inside the COTS stage."""
    staged: str = ""
    """Where the COTS stage unpacks, to be copied alone into `extract_to`."""


class PythonDeps(_Frozen):
    lock: str
    """The lock file in the build context."""
    dest: str
    """The lock file in the image."""
    require_hashes: bool


class Builder(_Frozen):
    packages: list[str]
    workdir: str
    copies: list[CopyStep]
    commands: list[str]
    artifacts: list[str]


class User(_Frozen):
    spec: str
    """runtime.user as written, for USER."""
    name: str
    uid: str = ""
    group: str = ""
    gid: str = ""
    create: bool
    """False for root and for the base image's own user."""
    root: bool


class RenderContext(_Frozen):
    """Everything the Dockerfile and Apptainer templates use; nothing else reaches them."""

    name: str
    version: str
    profile: str
    base_image: str
    package_manager: str
    base_user: str
    python: str
    python_env: Literal["", "venv", "micromamba"]
    python_prefix: str
    trust: Trust | None
    mirrors: Mirrors
    runtime_packages: list[str]
    cots: list[Cots]
    python_deps: PythonDeps | None
    builder: Builder | None
    workdir: str
    app_copies: list[CopyStep]
    app_install: str
    env: dict[str, str]
    user: User
    root_reason: str
    entrypoint: list[str]
    labels: dict[str, str]
    tests: list[SmokeTest]
    files: list[ContextFile]
    ignore: list[str]


def _fail(manifest: LoadedManifest, field: str, message: str) -> InputError:
    return InputError(f"{manifest.path}: {field}: {message}")


def _profile(manifest: LoadedManifest) -> tuple[str, BaseProfile]:
    """The catalog profile named by base.profile, or the one whose image base.image is."""
    base = manifest.processor.base
    profiles = load_catalog().profiles
    if base.profile:
        if base.profile not in profiles:
            raise _fail(manifest, "base.profile", f"'{base.profile}' is not in the catalog")
        return base.profile, profiles[base.profile]
    name = image_profile(base.image)
    if name is None:
        raise _fail(manifest, "base.image", unknown_image_problem(base.image))
    return name, profiles[name]


def _mirror(value: str, setting: str) -> str:
    """A mirror URL safe to write into a layer: http(s), no credentials, no shell or sed syntax."""
    if not value:
        return ""
    if urlsplit(value).username is not None:
        raise InputError(
            f"site.{setting}: a mirror URL must not carry credentials (they would stay in a layer)"
        )
    if not _MIRROR.match(value):
        raise InputError(f"site.{setting}: expected an http(s) URL such as http://mirror.example/debian")
    return value.rstrip("/")


def _shell_command(manifest: LoadedManifest, field: str, command: str) -> str:
    problem = shell_command_problem(command)
    if problem:
        raise _fail(manifest, field, problem)
    return command.strip()


def _local(manifest: LoadedManifest, field: str, value: str) -> str:
    """A processor-relative path as the build context holds it."""
    problem = context_path_problem(value)
    if problem:
        raise _fail(manifest, field, problem)
    return posixpath.normpath(value.removeprefix("./")) + ("/" if value.endswith("/") else "")


def _copies(
    manifest: LoadedManifest, section: str, specs: list[CopySpec], files: list[ContextFile]
) -> list[CopyStep]:
    steps = []
    for index, spec in enumerate(specs):
        field = f"{section}.copy[{index}].from"
        path = _local(manifest, field, spec.from_)
        files.append(ContextFile(path=path.rstrip("/"), source=path.rstrip("/"), field=field))
        steps.append(CopyStep(source=path, dest=spec.to))
    return steps


def _one_line(manifest: LoadedManifest, field: str, value: str) -> str:
    problem = one_line_problem(value)
    if problem:
        raise _fail(manifest, field, problem)
    return value


def _env(manifest: LoadedManifest, field: str, env: dict[str, str]) -> dict[str, str]:
    for name, value in env.items():
        problem = env_value_problem(name, value)
        if problem:
            raise _fail(manifest, f"{field}.{name}", problem)
    return dict(sorted(env.items()))


def _cots(manifest: LoadedManifest, files: list[ContextFile]) -> list[Cots]:
    items = []
    for index, item in enumerate(manifest.processor.cots):
        field = f"cots[{index}].source"
        remote = is_remote(item.source)
        filename = cots_archive_name(item.source, item.name)
        problem = archive_name_problem(filename)
        if problem:
            raise _fail(manifest, field, problem)
        extract_to = posixpath.normpath(item.extract_to)
        if remote:
            problem = cots_url_problem(item.source)
            if problem:
                raise _fail(manifest, field, problem)
            source, stage = item.source, f"cots-{item.name}"
            archive, staged = f"{COTS_DOWNLOADS}/{filename}", COTS_STAGING + extract_to
        else:
            local = _local(manifest, field, item.source)
            source, stage, archive, staged = f"{COTS_CONTEXT}/{item.name}.tar", "", "", ""
            repack = Repack(sha256=item.sha256, extract_to=extract_to, strip_components=item.strip_components)
            files.append(ContextFile(path=source, source=local, field=field, repack=repack))
        items.append(
            Cots(
                name=item.name,
                version=" ".join(item.version.split()),
                license=" ".join(item.license.split()),
                source=source,
                remote=remote,
                sha256=item.sha256,
                extract_to=extract_to,
                strip_components=item.strip_components,
                env=_env(manifest, f"cots[{index}].env", item.env),
                stage=stage,
                archive=archive,
                staged=staged,
            )
        )
    return items


def _repacked_apart(manifest: LoadedManifest, files: list[ContextFile]) -> None:
    """No processor file may sit where a repacked COTS archive is written, or hold it."""
    repacked = {f.path: f for f in files if f.repack}
    for other in files:
        if other.repack:
            continue
        for path, item in repacked.items():
            if other.path == path or path.startswith(other.path.rstrip("/") + "/"):
                raise _fail(
                    manifest,
                    other.field,
                    f"'{other.source}' would take the place of {path}, where imagekit writes the "
                    f"repacked archive of {item.field.removesuffix('.source')}; move it elsewhere",
                )


def _user(manifest: LoadedManifest, profile: BaseProfile) -> User:
    spec = manifest.processor.runtime.user
    who, _, group = spec.partition(":")
    root = who == "root" or set(who) == {"0"}
    if root and not manifest.processor.runtime.allow_root:
        raise _fail(
            manifest, "runtime.user", "runs as root, which needs runtime.allow_root and a root_reason"
        )
    return User(
        spec=spec,
        name=DEFAULT_USER_NAME if who.isdigit() else who,
        uid=who if who.isdigit() else "",
        group="" if group.isdigit() else group,
        gid=group if group.isdigit() else "",
        create=not root and who != profile.user,
        root=root,
    )


def _labels(manifest: LoadedManifest, base: BaseRef, profile: str, source: SourceInfo) -> dict[str, str]:
    info = manifest.processor.processor
    oci = "org.opencontainers.image."
    executables = [e.model_dump(mode="json") for e in manifest.processor.executables]
    generated = {
        oci + "title": info.name,
        oci + "version": info.version,
        oci + "revision": source.revision,
        oci + "created": source.created,
        oci + "source": info.source_url or source.source_url,
        oci + "licenses": " AND ".join(info.licenses),
        oci + "description": " ".join(info.description.split()),
        oci + "authors": ", ".join(" ".join(name.split()) for name in info.maintainers),
        oci + "base.name": base.image,
        oci + "base.digest": base.digest,
        "imagekit.base.profile": profile,
        "imagekit.manifest.sha256": manifest.sha256,
        "imagekit.executables": json.dumps(executables, separators=(",", ":"), sort_keys=True),
    }
    labels = {key: value for key, value in generated.items() if value}
    for key, value in manifest.processor.labels.items():
        problem = label_key_problem(key)
        if problem:
            raise _fail(manifest, f"labels.{key}", problem)
        labels[key] = _one_line(manifest, f"labels.{key}", value)
    return dict(sorted(labels.items()))


def render_context(
    manifest: LoadedManifest, base: BaseRef, site: SiteSettings, source: SourceInfo
) -> RenderContext:
    """Everything the templates need, from the manifest; raises InputError naming the field at fault."""
    processor: Processor = manifest.processor
    profile_name, profile = _profile(manifest)
    if not DIGEST_PATTERN.match(base.digest):
        raise _fail(
            manifest, "base", f"the base must be pinned by digest sha256:<64 hex>, got '{base.digest}'"
        )
    files: list[ContextFile] = []

    trust = None
    if site.ca_certificates:
        names = [f"ca-{index}.crt" for index in range(1, len(site.ca_certificates) + 1)]
        for index, (host_path, name) in enumerate(zip(site.ca_certificates, names, strict=True)):
            field = f"site.ca_certificates[{index}]"
            files.append(ContextFile(path=f"{SITE_DIR}/{name}", source=host_path, field=field))
        trust = Trust(
            files=[f"{SITE_DIR}/{name}" for name in names],
            anchors=profile.trust.anchors,
            installed=[f"{profile.trust.anchors}/{name}" for name in names],
            update=profile.trust.update,
            bundle=profile.trust.bundle,
        )
    apt = _mirror(site.apt_mirror, "apt_mirror")
    replaced = bool(apt and profile.apt_sources)
    mirrors = Mirrors(
        apt=apt,
        apt_file=APT_LIST if replaced else "",
        apt_lines=mirror_from_setting(apt).sources(profile.suite) if replaced else [],
        apt_removed=[path for path in profile.apt_sources if path != APT_LIST] if replaced else [],
        pip_index_url=_mirror(site.pip_index_url, "pip_index_url") if profile.python else "",
    )

    app_install = (
        _shell_command(manifest, "app.install", processor.app.install)
        if processor.app and processor.app.install.strip()
        else ""
    )
    # An environment only when something installs into it: the lock, or the app's install command.
    wanted = processor.dependencies.python is not None or bool(app_install)
    python_env: Literal["", "venv", "micromamba"] = (
        (profile.conda or ("venv" if profile.python else "")) if wanted else ""
    )
    python_prefix = {"venv": VENV, "micromamba": posixpath.dirname(posixpath.dirname(profile.python))}.get(
        python_env, ""
    )
    python_deps = None
    if processor.dependencies.python is not None:
        problem = python_problem(profile_name, profile)
        if problem:
            raise _fail(manifest, "dependencies.python", problem)
        lock = _local(
            manifest, "dependencies.python.requirements", processor.dependencies.python.requirements
        )
        files.append(ContextFile(path=lock, source=lock, field="dependencies.python.requirements"))
        python_deps = PythonDeps(
            lock=lock,
            dest=f"{LOCK_DIR}/{posixpath.basename(lock)}",
            require_hashes=processor.dependencies.python.require_hashes,
        )

    builder = None
    if processor.build is not None:
        build = processor.build
        builder = Builder(
            packages=sorted(set(processor.system_packages.build)),
            workdir=build.workdir,
            copies=_copies(manifest, "build", build.copy_, files),
            commands=[
                _shell_command(manifest, f"build.commands[{i}]", c) for i, c in enumerate(build.commands)
            ],
            artifacts=[posixpath.normpath(a) for a in build.artifacts],
        )
    elif processor.system_packages.build:
        raise _fail(manifest, "system_packages.build", "build packages need a `build` section to use them")

    app_copies = _copies(manifest, "app", processor.app.copy_, files) if processor.app else []
    cots = _cots(manifest, files)
    _repacked_apart(manifest, files)
    unique = {f.path: f for f in files}
    runtime = processor.runtime
    return RenderContext(
        name=processor.processor.name,
        version=processor.processor.version,
        profile=profile_name,
        base_image=base.pinned,
        package_manager=profile.package_manager,
        base_user=profile.user,
        python=profile.python,
        python_env=python_env,
        python_prefix=python_prefix,
        trust=trust,
        mirrors=mirrors,
        runtime_packages=sorted(set(processor.system_packages.runtime)),
        cots=cots,
        python_deps=python_deps,
        builder=builder,
        workdir=runtime.workdir,
        app_copies=app_copies,
        app_install=app_install,
        env=_env(manifest, "runtime.env", runtime.env),
        user=_user(manifest, profile),
        root_reason=" ".join(runtime.root_reason.split()),
        entrypoint=list(runtime.entrypoint),
        labels=_labels(manifest, base, profile_name, source),
        tests=list(processor.tests),
        files=[unique[path] for path in sorted(unique)],
        ignore=list(CACHE_PATTERNS),
    )

"""Rules across fields and about the processor directory, beyond what one field says of itself.

They read the plain YAML data, not a validated model, so a manifest with a type error elsewhere
still gets every other problem reported; a value of the wrong type is skipped here, the model
reports it.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from imagekit.catalog import load_catalog
from imagekit.manifest.checksums import ChecksumCache
from imagekit.manifest.loader import Finding, Loc
from imagekit.manifest.model import IMAGE_PATTERN, SHA256_PATTERN
from imagekit.manifest.rules import (
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


def check(
    data: dict[str, Any],
    directory: Path,
    *,
    release: bool,
    checksums: ChecksumCache | None = None,
    bases: str | None = None,
) -> list[Finding]:
    """Every semantic problem of a manifest whose processor directory is `directory`.

    With `checksums`, each local COTS archive is hashed and compared with its `sha256`; with `bases`
    (the site's `<registry>/<project>/base`), a `base.image` must be the site's copy of a catalog base.
    """
    return [
        *_base(data, release=release, bases=bases),
        *_local_paths(data, directory),
        *_unique_names(data),
        *_root_user(data),
        *_labels(data),
        *_dockerfile_values(data),
        *_python(data, bases),
        *_build_packages(data),
        *(_archive_checksums(data, directory, checksums) if checksums else []),
    ]


def _get(data: Any, *loc: Any) -> Any:
    for segment in loc:
        if isinstance(data, dict) and isinstance(segment, str):
            data = data.get(segment)
        elif isinstance(data, list) and isinstance(segment, int) and segment < len(data):
            data = data[segment]
        else:
            return None
    return data


def _text(data: Any, *loc: Any) -> str:
    """The string at `loc`, or "" when it is absent or not a string (the model reports that)."""
    value = _get(data, *loc)
    return value if isinstance(value, str) else ""


def _entries(data: Any, *loc: Any) -> list[tuple[Loc, dict[str, Any]]]:
    """(location, mapping) of each mapping in the list at `loc`."""
    items = _get(data, *loc)
    if not isinstance(items, list):
        return []
    return [((*loc, index), item) for index, item in enumerate(items) if isinstance(item, dict)]


def _base(data: dict[str, Any], *, release: bool, bases: str | None) -> list[Finding]:
    """Exactly one of a catalog profile or an image; render needs an image of the catalog, pinned."""
    if not isinstance(data.get("base"), dict):
        return []
    profile, image, digest = (_text(data, "base", key) for key in ("profile", "image", "digest"))
    profiles = sorted(load_catalog().profiles)
    findings = []
    if profile and image:
        findings.append(Finding(("base",), "give either profile or image, not both", True))
    elif not profile and not image:
        message = f"give a profile (one of: {', '.join(profiles)}) or an image"
        findings.append(Finding(("base",), message, True))
    if profile and profile not in profiles:
        close = difflib.get_close_matches(profile, profiles, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        message = f"unknown base profile '{profile}'{hint}; the catalog has: {', '.join(profiles)}"
        findings.append(Finding(("base", "profile"), message))
    if digest and not image:
        message = "a digest pins base.image, which is not given (catalog profiles are pinned per site)"
        findings.append(Finding(("base", "digest"), message))
    if profile or not image or not re.match(IMAGE_PATTERN, image):
        return findings  # the model reports a malformed image
    if image_profile(image, bases) is None:
        findings.append(Finding(("base", "image"), unknown_image_problem(image, bases)))
    if not digest:
        message = (
            "a release needs the image pinned: add base.digest: sha256:<64 hex digits>"
            if release
            else "FROM is always pinned by digest: add base.digest: sha256:<64 hex digits>"
        )
        findings.append(Finding(("base", "image"), message))
    return findings


def _profile_of(data: dict[str, Any], bases: str | None) -> str | None:
    """The catalog profile the base names, directly or by its image; None when unknown."""
    profile, image = _text(data, "base", "profile"), _text(data, "base", "image")
    if profile:
        return profile if profile in load_catalog().profiles else None
    return image_profile(image, bases) if image else None


def _python(data: dict[str, Any], bases: str | None) -> list[Finding]:
    """Python dependencies need a base with Python."""
    if _get(data, "dependencies", "python") is None:
        return []
    name = _profile_of(data, bases)
    problem = python_problem(name, load_catalog().profiles[name]) if name else None
    return [Finding(("dependencies", "python"), problem, True)] if problem else []


def _build_packages(data: dict[str, Any]) -> list[Finding]:
    """Build packages are installed in the builder stage, which only a `build` section makes."""
    if _get(data, "system_packages", "build") and data.get("build") is None:
        message = "build packages need a `build` section to use them"
        return [Finding(("system_packages", "build"), message, True)]
    return []


def _local_paths(data: dict[str, Any], directory: Path) -> list[Finding]:
    """Files the build copies exist and stay inside the processor directory."""
    findings = []
    for loc, item in _entries(data, "cots"):
        source, where = _text(item, "source"), (*loc, "source")
        if is_remote(source):
            problem = cots_url_problem(source)
            filename = "" if problem else cots_archive_name(source, _text(item, "name"))
            problem = problem or (archive_name_problem(filename) if filename else None)
            findings += [Finding(where, problem)] if problem else []
        elif "://" in source:
            message = f"expected a path inside the processor directory or an https:// URL, got '{source}'"
            findings.append(Finding(where, message))
        elif source:
            found = _inside(directory, where, source, want_file=True)
            problem = None if found else archive_name_problem(cots_archive_name(source, ""))
            findings += found or ([Finding(where, problem)] if problem else [])
    for section in ("build", "app"):
        for loc, item in _entries(data, section, "copy"):
            findings += _inside(directory, (*loc, "from"), _text(item, "from"), want_file=False)
    requirements = ("dependencies", "python", "requirements")
    findings += _inside(directory, requirements, _text(data, *requirements), want_file=True)
    return findings


def _inside(directory: Path, loc: Loc, value: str, *, want_file: bool) -> list[Finding]:
    """No absolute path, no '..', no symlink leading out; the file or directory exists."""
    if not value:
        return []
    if "://" in value:
        return [Finding(loc, f"expected a path inside the processor directory, got the URL '{value}'")]
    if PurePosixPath(value).is_absolute():
        return [Finding(loc, f"expected a path relative to the processor directory, got '{value}'")]
    if ".." in PurePosixPath(value).parts:
        return [Finding(loc, f"'{value}' leaves the processor directory: '..' is not allowed")]
    problem = context_path_problem(value) or _os_path_problem(directory, value)
    if problem:
        return [Finding(loc, problem)]
    root = directory.resolve()
    target = directory / value
    try:
        resolved = target.resolve()
        exists, is_file = resolved.exists(), resolved.is_file()
    except (OSError, RuntimeError):
        return [Finding(loc, f"'{value}' cannot be resolved (a symlink loop?)")]
    if not resolved.is_relative_to(root):
        return [Finding(loc, f"'{value}' is a symlink leading outside the processor directory")]
    if not exists:
        return [Finding(loc, f"'{value}' does not exist in the processor directory {directory}")]
    if want_file and not is_file:
        return [Finding(loc, f"'{value}' is not a file")]
    escaping = _escaping_symlink(resolved, root) if resolved.is_dir() else None
    if escaping:
        relative = escaping.relative_to(root)
        return [Finding(loc, f"'{relative}' is a symlink leading outside the processor directory")]
    return []


def _os_path_problem(directory: Path, value: str) -> str | None:
    """What the file system cannot even look up: a NUL byte, a name or path longer than it allows."""
    if "\0" in value:
        return "a path cannot contain a NUL byte"
    name_max = os.pathconf(directory, "PC_NAME_MAX") if directory.is_dir() else 255
    longest = max((len(part.encode()) for part in PurePosixPath(value).parts), default=0)
    if longest > name_max:
        return f"a name in this path is {longest} bytes long; the file system allows {name_max}"
    full = len(os.fsencode(directory.absolute() / value))
    if full >= os.pathconf("/", "PC_PATH_MAX"):
        return f"this path is {full} bytes long in the processor directory; the file system allows fewer"
    return None


def _escaping_symlink(tree: Path, root: Path) -> Path | None:
    """The first symlink under `tree` whose target is outside `root`: copying would follow it."""
    for folder, dirs, files in os.walk(tree):
        for name in sorted(dirs + files):
            path = Path(folder, name)
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                return path
    return None


def _unique_names(data: dict[str, Any]) -> list[Finding]:
    """A workflow engine and the test report address executables, tests and COTS by name."""
    findings = []
    for section in ("cots", "executables", "tests"):
        seen: dict[str, str] = {}
        for loc, item in _entries(data, section):
            name = _text(item, "name")
            if name in seen:
                findings.append(Finding((*loc, "name"), f"'{name}' is already the name of {seen[name]}"))
            elif name:
                seen[name] = f"{section}[{loc[-1]}]"
    return findings


def _root_user(data: dict[str, Any]) -> list[Finding]:
    """Root in a shared data centre must be asked for, and explained."""
    user = _text(data, "runtime", "user")
    uid = user.split(":")[0]
    if not (uid == "root" or (uid and set(uid) == {"0"})):
        return []
    if _get(data, "runtime", "allow_root") is not True:
        message = (
            "runs as root: use a non-root user such as 1000:1000, "
            "or set allow_root: true and say why in root_reason"
        )
        return [Finding(("runtime", "user"), message)]
    if not _text(data, "runtime", "root_reason").strip():
        message = "allow_root: true needs a root_reason saying why the processor must run as root"
        return [Finding(("runtime", "allow_root"), message)]
    return []


def _labels(data: dict[str, Any]) -> list[Finding]:
    labels = _get(data, "labels")
    if not isinstance(labels, dict):
        return []
    findings = []
    for key in labels:
        problem = label_key_problem(str(key))
        if problem:
            findings.append(Finding(("labels", key), problem, True))
    return findings


def _strings(data: Any, *loc: Any) -> list[tuple[Loc, str]]:
    """(location, text) of the strings in the list or mapping at `loc`, or of the string there."""
    found = _get(data, *loc)
    if isinstance(found, str):
        return [(loc, found)]
    if isinstance(found, list):
        return [((*loc, i), v) for i, v in enumerate(found) if isinstance(v, str)]
    if isinstance(found, dict):
        return [((*loc, k), v) for k, v in found.items() if isinstance(v, str)]
    return []


def _dockerfile_values(data: dict[str, Any]) -> list[Finding]:
    """Values that become one Dockerfile line: shell commands, environment values, labels."""
    findings = []
    for loc, command in [*_strings(data, "build", "commands"), *_strings(data, "app", "install")]:
        problem = shell_command_problem(command)
        if problem:
            findings.append(Finding(loc, problem))
    cots_env = [pair for loc, _ in _entries(data, "cots") for pair in _strings(data, *loc, "env")]
    for loc, value in [*_strings(data, "runtime", "env"), *cots_env]:
        problem = env_value_problem(str(loc[-1]), value)
        if problem:
            findings.append(Finding(loc, problem))
    for loc, value in _strings(data, "labels"):
        problem = one_line_problem(value)
        if problem:
            findings.append(Finding(loc, problem))
    return findings


def _archive_checksums(data: dict[str, Any], directory: Path, checksums: ChecksumCache) -> list[Finding]:
    """Each local COTS archive has the sha256 the manifest says (hashed once per file change)."""
    findings = []
    for loc, item in _entries(data, "cots"):
        source, expected = _text(item, "source"), _text(item, "sha256")
        if not source or "://" in source or not re.match(SHA256_PATTERN, expected):
            continue
        if _inside(directory, (*loc, "source"), source, want_file=True):
            continue  # reported by _local_paths
        try:
            actual = checksums.sha256(directory / source)
        except OSError as exc:
            findings.append(Finding((*loc, "source"), f"cannot read '{source}': {exc.strerror or exc}"))
            continue
        if actual != expected:
            message = f"expected {expected}, got {actual} (the sha256sum of '{source}')"
            findings.append(Finding((*loc, "sha256"), message))
    return findings

"""Rules across fields and about the processor directory, beyond what one field says of itself.

They read the plain YAML data, not a validated model, so a manifest with a type error elsewhere
still gets every other problem reported; a value of the wrong type is skipped here, the model
reports it.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from imagekit.catalog import load_catalog
from imagekit.manifest.loader import Finding, Loc
from imagekit.manifest.rules import label_key_problem, one_line_problem, shell_command_problem


def check(data: dict[str, Any], directory: Path, *, release: bool) -> list[Finding]:
    """Every semantic problem of a manifest whose processor directory is `directory`."""
    return [
        *_base(data, release=release),
        *_local_paths(data, directory),
        *_unique_names(data),
        *_root_user(data),
        *_labels(data),
        *_dockerfile_values(data),
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


def _base(data: dict[str, Any], *, release: bool) -> list[Finding]:
    """Exactly one of a catalog profile or an image; a release pins the image by digest."""
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
    if release and image and not digest:
        message = "a release needs the image pinned: add base.digest: sha256:<64 hex digits>"
        findings.append(Finding(("base", "image"), message))
    return findings


def _local_paths(data: dict[str, Any], directory: Path) -> list[Finding]:
    """Files the build copies exist and stay inside the processor directory."""
    findings = []
    for loc, item in _entries(data, "cots"):
        source = _text(item, "source")
        scheme = urlsplit(source).scheme if "://" in source else ""
        if scheme == "https" and urlsplit(source).netloc:
            continue
        if scheme:
            message = f"expected a path inside the processor directory or an https:// URL, got '{source}'"
            findings.append(Finding((*loc, "source"), message))
            continue
        findings += _inside(directory, (*loc, "source"), source, want_file=True)
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
    root = directory.resolve()
    target = directory / value
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError):
        return [Finding(loc, f"'{value}' cannot be resolved (a symlink loop?)")]
    if not resolved.is_relative_to(root):
        return [Finding(loc, f"'{value}' is a symlink leading outside the processor directory")]
    if not resolved.exists():
        return [Finding(loc, f"'{value}' does not exist in the processor directory {directory}")]
    if want_file and not resolved.is_file():
        return [Finding(loc, f"'{value}' is not a file")]
    escaping = _escaping_symlink(resolved, root) if resolved.is_dir() else None
    if escaping:
        relative = escaping.relative_to(root)
        return [Finding(loc, f"'{relative}' is a symlink leading outside the processor directory")]
    return []


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
    for loc, value in [*_strings(data, "runtime", "env"), *cots_env, *_strings(data, "labels")]:
        problem = one_line_problem(value)
        if problem:
            findings.append(Finding(loc, problem))
    return findings

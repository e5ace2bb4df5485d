"""Fuzzing: random bytes, random YAML and random edits of a good manifest never raise anything but
ManifestError or InputError, and each is answered within a sanity bound of time."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from manifest_cases import GOOD

from imagekit.errors import InputError
from imagekit.manifest import json_schema, load_manifest

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _schema_keys(node: Any) -> set[str]:
    """Every key the schema names, so random mappings often look almost right."""
    keys: set[str] = set()
    if isinstance(node, dict):
        keys.update(node.get("properties", {}))
        for value in node.values():
            keys |= _schema_keys(value)
    elif isinstance(node, list):
        for value in node:
            keys |= _schema_keys(value)
    return keys


KEYS = st.sampled_from(sorted(_schema_keys(json_schema()))) | st.text(max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["1.4.0", "/opt/x", "1000:1000", "root", "debian-12", "sha256:", "../x", "cots"])
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=40,
)


def _load(directory: Path, content: bytes) -> None:
    (directory / "processor.yaml").write_bytes(content)
    started = time.monotonic()
    with contextlib.suppress(InputError):
        load_manifest(directory)
    assert time.monotonic() - started < 2, "sanity bound: one small input must not take seconds"


@FUZZ
@given(content=st.binary(max_size=4096))
def test_random_bytes(content: bytes, proc_dir: Path) -> None:
    _load(proc_dir, content)


@FUZZ
@given(
    content=st.text(alphabet=st.sampled_from(list("ab: -[]{},'\"&*!|>#?\n\t%@`~.0123456789")), max_size=400)
)
def test_random_yaml_syntax(content: str, proc_dir: Path) -> None:
    _load(proc_dir, content.encode())


@FUZZ
@given(document=st.dictionaries(KEYS, VALUES, max_size=8))
def test_random_yaml_structures(document: dict[str, Any], proc_dir: Path) -> None:
    _load(proc_dir, yaml.safe_dump({"schema_version": 1, **document}, allow_unicode=True).encode())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


GOOD_DATA = yaml.safe_load(GOOD)
GOOD_PATHS = _paths(GOOD_DATA)[1:]


@FUZZ
@given(path=st.sampled_from(GOOD_PATHS), value=VALUES, drop=st.booleans())
def test_random_edits_of_a_good_manifest(
    path: tuple[Any, ...], value: Any, drop: bool, proc_dir: Path
) -> None:
    document = yaml.safe_load(GOOD)
    parent = document
    for segment in path[:-1]:
        parent = parent[segment]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    _load(proc_dir, yaml.safe_dump(document, allow_unicode=True).encode())

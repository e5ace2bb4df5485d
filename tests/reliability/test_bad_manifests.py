"""Structural fuzz of a good manifest through the CLI's `validate` and `render`: every mutation (wrong
types, missing and extra keys, odd strings, NUL bytes and over-long values in paths) is either valid or
exit 2 naming FILE:LINE:COL, never `internal error` or a traceback, and a refused manifest writes no file."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from manifest_cases import GOOD, PROCESSOR_FILES
from reliability_parts import Case, tree_digest

from imagekit.cli import main
from imagekit.config import Profile

GOOD_DATA = yaml.safe_load(GOOD)
EXAMPLES = 220  # per command: 440 mutations in all
LOCATED = re.compile(r"processor\.yaml:\d+:\d+: ")


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


ALL_PATHS = _paths(GOOD_DATA)[1:]


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for segment in path:
        document = document[segment]
    return document


MAPPINGS = [p for p in [(), *ALL_PATHS] if isinstance(_at(GOOD_DATA, p), dict)]
PATH_VALUES = [
    p
    for p in ALL_PATHS
    if isinstance(_at(GOOD_DATA, p), str) and "/" in _at(GOOD_DATA, p) and "://" not in _at(GOOD_DATA, p)
]

ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\u202e\u2066evil",
        "a\nb",
        "a\rb",
        "line\u2028sep",
        "$(rm -rf /)",
        "`id`",
        "'; DROP",
        "../../../../etc/passwd",
        "/",
        "//",
        "..",
        ".",
        "~root",
        "C:\\Windows",
        "\\\\server\\share",
        "%s%n",
        "{{ 7*7 }}",
        "{% raw %}",
        "${HOME}",
        "\ufeffbom",
        "\U0001f600",
        "x" * 5000,
        "-rf",
        "#comment",
        "a\tb",
        "\x1b[31mred",
    ]
) | st.text(max_size=30)
WRONG_TYPES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats()
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
)


def _nul(value: str) -> str:
    return value[:1] + "\x00" + value[1:]


def _too_long(value: str) -> str:
    return value.rstrip("/") + "/" + "d" * 300 + ("/" + "e" * 250) * 20  # a component > 255, a path > 4096


MUTATION = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(ALL_PATHS), st.none()),
    st.tuples(st.just("retype"), st.sampled_from(ALL_PATHS), WRONG_TYPES),
    st.tuples(st.just("odd"), st.sampled_from(ALL_PATHS), ODD_STRINGS),
    st.tuples(st.just("extra"), st.sampled_from(MAPPINGS), st.text(min_size=1, max_size=12)),
    st.tuples(st.just("nul"), st.sampled_from(PATH_VALUES), st.none()),
    st.tuples(st.just("long"), st.sampled_from(PATH_VALUES), st.none()),
)


def mutate(kind: str, path: tuple[Any, ...], value: Any) -> Any:
    document = copy.deepcopy(GOOD_DATA)
    if kind == "extra":
        _at(document, path)[value] = "surplus"
        return document
    parent, key = _at(document, path[:-1]), path[-1]
    if kind == "drop":
        del parent[key]
    elif kind in ("retype", "odd"):
        parent[key] = value
    elif kind == "nul":
        parent[key] = _nul(parent[key])
    elif kind == "long":
        parent[key] = _too_long(parent[key])
    return document


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, site_profile: Profile) -> Path:
    """A processor directory with every file GOOD refers to; the data directory and cwd inside tmp_path."""
    directory = tmp_path / "proc"
    for relative, content in PROCESSOR_FILES.items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(content, encoding="utf-8")
    (tmp_path / "data").mkdir()
    bases = site_profile.data_dir / "bases.json"  # render needs the site's bootstrapped base digests
    if bases.is_file():
        shutil.copy(bases, tmp_path / "data" / "bases.json")
    monkeypatch.setenv("IMAGEKIT_PATHS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("IMAGEKIT_PROFILE", raising=False)
    monkeypatch.chdir(tmp_path)
    return directory


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _run(
    command: str,
    mutation: tuple[str, tuple[Any, ...], Any],
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kind, path, value = mutation
    text = yaml.safe_dump(mutate(kind, path, value), allow_unicode=True, width=10**6)
    (workspace / "processor.yaml").write_text(text, encoding="utf-8")
    output = workspace.parent / "out"
    before = tree_digest(workspace.parent, skip=(workspace.parent / "data",))
    argv = (
        ["validate", str(workspace)]
        if command == "validate"
        else ["render", str(workspace), "-o", str(output)]
    )
    capsys.readouterr()
    code = main(argv)
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "internal error" not in stderr and "Traceback" not in stderr, (mutation, stderr)
    assert code in (0, 2), (mutation, code, stderr)
    if code == 0:
        if output.exists():
            shutil.rmtree(output)
        return
    assert any(LOCATED.search(line) for line in lines), (mutation, stderr)
    assert "processor.yaml" in lines[-1] or "manifests invalid" in lines[-1], (mutation, stderr)
    assert tree_digest(workspace.parent, skip=(workspace.parent / "data",)) == before, (
        f"{command} wrote a file for a refused manifest: {mutation}"
    )


@FUZZ
@given(mutation=MUTATION)
def test_validate_refuses_every_bad_mutation_located(
    mutation: tuple[str, tuple[Any, ...], Any],
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    case: Case,
) -> None:
    case.tried()
    _run("validate", mutation, workspace, capsys)


@FUZZ
@given(mutation=MUTATION)
def test_render_refuses_every_bad_mutation_located(
    mutation: tuple[str, tuple[Any, ...], Any],
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    case: Case,
) -> None:
    case.tried()
    _run("render", mutation, workspace, capsys)


@pytest.mark.parametrize("kind", ["nul", "long"])
@pytest.mark.parametrize("path", PATH_VALUES, ids=lambda p: ".".join(map(str, p)))
def test_every_path_value_with_a_nul_or_too_long(
    kind: str, path: tuple[Any, ...], workspace: Path, capsys: pytest.CaptureFixture[str], case: Case
) -> None:
    for command in ("validate", "render"):
        _run(command, (kind, path, None), workspace, capsys)

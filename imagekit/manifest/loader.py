"""Reading processor.yaml safely and saying precisely where each problem is.

The file is parsed once with ruamel.yaml's round-trip loader, which remembers the line and column
of every key and value; model and semantic checks report a location path (`("cots", 0, "sha256")`)
that is mapped back to that position. Hostile input is refused early and cheaply: size before
reading, aliases before expansion, nesting depth and value count while parsing.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ruamel.yaml import YAML
from ruamel.yaml.comments import TaggedScalar
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scanner import RoundTripScanner

from imagekit.errors import InputError, ManifestError, Problem

MANIFEST_NAME = "processor.yaml"
# Bounds far above any real manifest (a full one has a few KiB, a hundred values, 5 levels), low
# enough that the pure-Python parser's worst case stays near half a second and its memory small.
MAX_BYTES = 128 * 1024
MAX_LINES = 5_000
MAX_NODES = 5_000
MAX_DEPTH = 20
YAML_TAG_PREFIX = "tag:yaml.org,2002:"
DEPTH_MESSAGE = f"nested deeper than {MAX_DEPTH} levels"
STANDARD_TAGS = {"!!str", "!!int", "!!float", "!!bool", "!!null", "!!map", "!!seq"}

Loc = tuple[Any, ...]


class Finding(NamedTuple):
    """A problem located by its path in the document; `at_key` points at the key, not its value."""

    loc: Loc
    message: str
    at_key: bool = False


@dataclass(frozen=True)
class Document:
    """A parsed processor.yaml: plain data for validation, the ruamel tree for positions."""

    file: Path
    raw: bytes
    data: dict[str, Any]
    tree: Any
    findings: list[Finding]

    def error(self, findings: list[Finding]) -> ManifestError:
        """One ManifestError with every finding, in file order, each reported once."""
        problems = {self._problem(f): None for f in findings}
        return ManifestError(sorted(problems, key=lambda p: (p.line, p.column, p.field)))

    def _problem(self, finding: Finding) -> Problem:
        line, column = self._position(finding.loc, at_key=finding.at_key)
        return Problem(str(self.file), line, column, _field_path(finding.loc), finding.message)

    def _position(self, loc: Loc, *, at_key: bool) -> tuple[int, int]:
        """1-based line:col of `loc`; of its parent's key when `loc` is absent (a missing field)."""
        node, key, value = self.tree, (0, 0), (0, 0)
        for segment in loc:
            entry = _lc_entry(node, segment)
            if entry is None:
                return key[0] + 1, key[1] + 1
            key = value = (entry[0], entry[1])
            if isinstance(node, dict):
                value = (entry[2], entry[3])
            node = node[segment]
        line, column = key if at_key else value
        return line + 1, column + 1


def _lc_entry(node: Any, segment: Any) -> Any:
    """ruamel's [line, col(, value line, value col)] of a key or item, 0-based; None if absent."""
    in_map = isinstance(node, dict) and segment in node
    in_list = isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node)
    lc = getattr(node, "lc", None)
    return lc.data.get(segment) if (in_map or in_list) and lc is not None else None


def _field_path(loc: Loc) -> str:
    """`cots[0].sha256`: the location path as a scientist would write it."""
    text = ""
    for segment in loc:
        text += f"[{segment}]" if isinstance(segment, int) else f"{'.' if text else ''}{segment}"
    return text


def find_manifest(path: Path) -> Path:
    """The processor.yaml of a processor directory, or the file itself."""
    if path.is_dir():
        file = path / MANIFEST_NAME
        if not file.exists():
            raise InputError(
                f"{path}: no {MANIFEST_NAME} in this directory (`imagekit init {path}` makes one)"
            )
        return file
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    return path


def read_document(file: Path) -> Document:
    """Read and parse, refusing what is too big, not UTF-8, not YAML or not a mapping."""
    raw = _read_bounded(file)

    def fail(line: int, column: int, message: str) -> ManifestError:
        return ManifestError([Problem(str(file), line, column, "", message)])

    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line, column = _offset_position(raw[: exc.start].decode("utf-8"))
        raise fail(line, column, "not UTF-8 text: save the file with UTF-8 encoding") from None
    if len(text.splitlines()) > MAX_LINES:
        raise fail(MAX_LINES + 1, 1, f"more than {MAX_LINES} lines: this cannot be a processor.yaml")
    try:
        tree = _yaml().load(text)
    except DuplicateKeyError as exc:
        key = re.search(r'duplicate key "(.*?)"', str(exc.problem))
        what = f"duplicate key '{key.group(1)}'" if key else "duplicate key"
        raise fail(*_mark(exc), f"{what}: each key may appear once in a mapping") from None
    except MarkedYAMLError as exc:
        raise fail(*_mark(exc), _yaml_message(exc)) from None
    except ReaderError as exc:
        line, column = _offset_position(text[: exc.position])
        raise fail(line, column, "not a text file: it holds control characters") from None
    except (YAMLError, RecursionError, ValueError, TypeError) as exc:
        raise fail(1, 1, f"not valid YAML: {exc}") from None
    if tree is None:
        raise fail(1, 1, "the file is empty: `imagekit init` writes a processor.yaml to start from")
    if not isinstance(tree, dict):
        raise fail(1, 1, "expected a mapping of keys such as schema_version, processor, base and tests")
    findings: list[Finding] = []
    data = _plain(tree, (), findings)
    return Document(file, raw, data, tree, findings)


def _read_bounded(file: Path) -> bytes:
    try:
        info = file.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{file}: not a regular file")
        if info.st_size > MAX_BYTES:
            raise _too_big(file, info.st_size)
        with file.open("rb") as stream:
            raw = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{file}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise _too_big(file, len(raw))
    return raw


def _too_big(file: Path, size: int) -> ManifestError:
    message = f"the file has {size} bytes; a processor.yaml may have at most {MAX_BYTES // 1024} KiB"
    return ManifestError([Problem(str(file), 1, 1, "", message)])


class _RefusedError(MarkedYAMLError):
    """YAML that is valid but refused: an alias, or more values than any manifest needs."""


class _BoundedComposer(Composer):
    """Refuses aliases before they are expanded ("billion laughs") and stops after MAX_NODES values."""

    nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        mark = self.parser.peek_event().start_mark
        if self.parser.check_event(AliasEvent):
            raise _RefusedError(
                problem="YAML aliases (*name) are not supported: write the value out", problem_mark=mark
            )
        self.nodes += 1
        if self.nodes > MAX_NODES:
            message = f"more than {MAX_NODES} values: this cannot be a processor.yaml"
            raise _RefusedError(problem=message, problem_mark=mark)
        return super().compose_node(parent, index)


class _BoundedScanner(RoundTripScanner):
    """Stops at the first '[' or '{' too deep, before it looks ahead through the rest of the file."""

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
        if len(self.flow_context) >= MAX_DEPTH:
            raise _RefusedError(problem=DEPTH_MESSAGE, problem_mark=self.reader.get_mark())
        super().fetch_flow_collection_start(TokenClass, to_push)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Scanner = _BoundedScanner
    yaml.Composer = _BoundedComposer
    yaml.max_depth = MAX_DEPTH
    return yaml


def _mark(exc: MarkedYAMLError) -> tuple[int, int]:
    mark = exc.problem_mark or exc.context_mark
    return (mark.line + 1, mark.column + 1) if mark else (1, 1)


def _yaml_message(exc: MarkedYAMLError) -> str:
    problem = str(exc.problem or exc.context or "")
    if "single document" in str(exc.context or ""):
        return "more than one YAML document ('---'): processor.yaml holds exactly one"
    if isinstance(exc, _RefusedError):
        return problem
    if "maximum depth" in problem:
        return DEPTH_MESSAGE
    return f"not valid YAML: {problem}"


def _offset_position(prefix: str) -> tuple[int, int]:
    """1-based line:col just after `prefix`, the text before the offending character."""
    return prefix.count("\n") + 1, len(prefix) - (prefix.rfind("\n") + 1) + 1


def _plain(node: Any, loc: Loc, findings: list[Finding]) -> Any:
    """The ruamel tree as plain dict/list/str/int/float/bool, with non-text keys and tags reported."""
    tag = str(getattr(getattr(node, "tag", None), "value", None) or "").replace(YAML_TAG_PREFIX, "!!")
    if tag and tag not in STANDARD_TAGS:
        findings.append(Finding(loc, f"YAML tags such as {tag} are not supported"))
    if isinstance(node, dict):
        result = {}
        for key, value in node.items():
            if isinstance(key, str):
                result[str(key)] = _plain(value, (*loc, key), findings)
            else:
                findings.append(Finding((*loc, key), "keys must be text: put this key in quotes", True))
        return result
    if isinstance(node, list):
        return [_plain(item, (*loc, index), findings) for index, item in enumerate(node)]
    for kind in (bool, int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return str(node.value) if isinstance(node, TaggedScalar) else node

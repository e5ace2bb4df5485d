"""Reading processor.yaml safely and saying precisely where each problem is.

The file is parsed once and the line and column of every key and value are kept; model and
semantic checks report a location path (`("cots", 0, "sha256")`) that is mapped back to that
position. Hostile input is refused early and cheaply: size and lines before parsing, aliases
before expansion, nesting depth and value count while parsing.

Two parsers, one result: libyaml (C, through PyYAML's events) reads the everyday manifest in well
under a millisecond; anything it would read differently from the YAML 1.2 rules imagekit has
always applied (an unusual scalar such as `0o7` or a date, an empty value, a tag, an anchor, a
duplicate key, deep nesting, a syntax error) hands the text to ruamel.yaml's round-trip loader,
so that every value, message, line and column is exactly what it always was.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import yaml

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
# The fast path leaves deeper or larger documents to the full parser, which refuses them exactly.
FAST_MAX_DEPTH = 10
FAST_MAX_NODES = MAX_NODES // 2

Loc = tuple[Any, ...]
Marks = dict[Loc, tuple[int, int, int, int]]
"""0-based (key line, key col, value line, value col) by location; a list item's key is itself."""


class Finding(NamedTuple):
    """A problem located by its path in the document; `at_key` points at the key, not its value."""

    loc: Loc
    message: str
    at_key: bool = False


@dataclass(frozen=True)
class Document:
    """A parsed processor.yaml: plain data for validation, the marks for positions."""

    file: Path
    raw: bytes
    data: dict[str, Any]
    marks: Marks
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
        key = value = (0, 0)
        for depth in range(1, len(loc) + 1):
            entry = self.marks.get(loc[:depth])
            if entry is None:
                return key[0] + 1, key[1] + 1
            key, value = (entry[0], entry[1]), (entry[2], entry[3])
        line, column = key if at_key else value
        return line + 1, column + 1


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
        data, marks = _parse_fast(text)
    except _HandOver:
        data, marks, findings = _parse_full(text, fail)
        return Document(file, raw, data, marks, findings)
    return Document(file, raw, data, marks, [])


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


class _HandOver(Exception):
    """The fast path met something only the full parser reads exactly as before."""


_WORDS: dict[str, Any] = {
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
    **dict.fromkeys(("~", "null", "Null", "NULL"), None),
}
# What YAML 1.2 (ruamel's resolver) reads as a number or a date; any other plain text is text.
_NUMBER_OR_DATE = re.compile(
    r"""[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN)
    |[-+]?0b[0-1_]+
    |[-+]?0o?[0-7_]+
    |[-+]?[0-9_]+
    |[-+]?0x[0-9a-fA-F_]+
    |[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
    |[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?
    (?:[Tt]|[\ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?
    (?:[\ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?""",
    re.X,
)
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]{0,17})")  # longer ones: the full parser decides
_DECIMAL_FRACTION = re.compile(r"[-+]?(?:0|[1-9][0-9]{0,17})\.[0-9]{1,17}")


def _scalar(event: yaml.ScalarEvent) -> Any:
    """A scalar's value under the YAML 1.2 core rules, for the plain forms whose value is obvious."""
    if event.tag is not None or event.anchor is not None:
        raise _HandOver
    if event.style in ("|", ">") and (not event.value or event.value[0] == "\n"):
        raise _HandOver  # leading blank lines: ruamel refuses some that libyaml takes
    if event.style:  # quoted, literal or folded: text as written
        return event.value
    value = event.value
    if value in _WORDS:
        return _WORDS[value]
    if not value or value in ("=", "<<"):
        raise _HandOver  # an empty value's mark differs; = and << are tagged
    if _NUMBER_OR_DATE.fullmatch(value):
        if _DECIMAL.fullmatch(value):
            return int(value)
        if _DECIMAL_FRACTION.fullmatch(value):
            return float(value)
        raise _HandOver  # octal, hex, 1_000, 1e3, .inf, dates, ...
    return value


def _parse_fast(text: str) -> tuple[dict[str, Any], Marks]:
    """libyaml's events into plain data and marks; _HandOver for anything unusual."""
    if "\t" in text:  # libyaml takes tabs in places ruamel refuses
        raise _HandOver
    marks: Marks = {}
    root: dict[str, Any] | None = None
    # each open collection: [container, its location, pending key, the key's mark]
    stack: list[list[Any]] = []
    nodes = 0
    try:
        for event in yaml.parse(text, Loader=yaml.CSafeLoader):
            if isinstance(event, yaml.NodeEvent):
                nodes += 1
                if isinstance(event, yaml.AliasEvent) or nodes > FAST_MAX_NODES:
                    raise _HandOver
                mark: Any = event.start_mark
                if not stack:
                    if root is not None or not isinstance(event, yaml.MappingStartEvent):
                        raise _HandOver
                    if event.tag is not None or event.anchor is not None:
                        raise _HandOver
                    root = {}
                    stack.append([root, (), None, None])
                    continue
                frame = stack[-1]
                container = frame[0]
                if isinstance(container, dict) and frame[2] is None:
                    if not isinstance(event, yaml.ScalarEvent):
                        raise _HandOver
                    key = _scalar(event)
                    if not isinstance(key, str) or key in container:
                        raise _HandOver
                    frame[2], frame[3] = key, (mark.line, mark.column)
                    continue
                if isinstance(container, dict):
                    loc = (*frame[1], frame[2])
                    key_line, key_column = frame[3]
                    frame[2] = None
                else:
                    loc = (*frame[1], len(container))
                    key_line, key_column = mark.line, mark.column
                marks[loc] = (key_line, key_column, mark.line, mark.column)
                if isinstance(event, yaml.ScalarEvent):
                    value: Any = _scalar(event)
                else:
                    start: Any = event
                    if start.tag is not None or start.anchor is not None or len(stack) >= FAST_MAX_DEPTH:
                        raise _HandOver
                    value = {} if isinstance(event, yaml.MappingStartEvent) else []
                    stack.append([value, loc, None, None])
                if isinstance(container, dict):
                    container[loc[-1]] = value
                else:
                    container.append(value)
            elif isinstance(event, yaml.CollectionEndEvent):
                stack.pop()
            elif isinstance(event, yaml.DocumentStartEvent) and (
                root is not None or event.version or event.tags
            ):
                raise _HandOver
    except yaml.YAMLError:
        raise _HandOver from None
    if root is None:
        raise _HandOver
    return root, marks


def _parse_full(
    text: str, fail: Callable[[int, int, str], ManifestError]
) -> tuple[dict[str, Any], Marks, list[Finding]]:
    """ruamel.yaml's round-trip loader, bounded: every refusal with its message and position."""
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    from ruamel.yaml.reader import ReaderError

    load, refused = _ruamel()
    try:
        tree = load(text)
    except DuplicateKeyError as exc:
        key = re.search(r'duplicate key "(.*?)"', str(exc.problem))
        what = f"duplicate key '{key.group(1)}'" if key else "duplicate key"
        raise fail(*_mark(exc), f"{what}: each key may appear once in a mapping") from None
    except MarkedYAMLError as exc:
        raise fail(*_mark(exc), _yaml_message(exc, refused)) from None
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
    marks: Marks = {}
    data = _plain(tree, (), findings, marks)
    return data, marks, findings


@cache
def _ruamel() -> tuple[Callable[[str], Any], type[Exception]]:
    """The bounded round-trip loader and its refusal error; ruamel is imported only when needed."""
    from ruamel.yaml import YAML
    from ruamel.yaml.composer import Composer
    from ruamel.yaml.error import MarkedYAMLError
    from ruamel.yaml.events import AliasEvent
    from ruamel.yaml.scanner import RoundTripScanner

    class RefusedError(MarkedYAMLError):
        """YAML that is valid but refused: an alias, or more values than any manifest needs."""

    class BoundedComposer(Composer):
        """Refuses aliases before they are expanded ("billion laughs"); stops after MAX_NODES values."""

        nodes = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            mark = self.parser.peek_event().start_mark
            if self.parser.check_event(AliasEvent):
                raise RefusedError(
                    problem="YAML aliases (*name) are not supported: write the value out", problem_mark=mark
                )
            self.nodes += 1
            if self.nodes > MAX_NODES:
                message = f"more than {MAX_NODES} values: this cannot be a processor.yaml"
                raise RefusedError(problem=message, problem_mark=mark)
            return super().compose_node(parent, index)

    class BoundedScanner(RoundTripScanner):
        """Stops at the first '[' or '{' too deep, before it looks ahead through the rest of the file."""

        def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
            if len(self.flow_context) >= MAX_DEPTH:
                raise RefusedError(problem=DEPTH_MESSAGE, problem_mark=self.reader.get_mark())
            super().fetch_flow_collection_start(TokenClass, to_push)

    def load(text: str) -> Any:
        parser = YAML(typ="rt")
        parser.Scanner = BoundedScanner
        parser.Composer = BoundedComposer
        parser.max_depth = MAX_DEPTH
        return parser.load(text)

    return load, RefusedError


def _mark(exc: Any) -> tuple[int, int]:
    mark = exc.problem_mark or exc.context_mark
    return (mark.line + 1, mark.column + 1) if mark else (1, 1)


def _yaml_message(exc: Any, refused: type[Exception]) -> str:
    problem = str(exc.problem or exc.context or "")
    if "single document" in str(exc.context or ""):
        return "more than one YAML document ('---'): processor.yaml holds exactly one"
    if isinstance(exc, refused):
        return problem
    if "maximum depth" in problem:
        return DEPTH_MESSAGE
    return f"not valid YAML: {problem}"


def _offset_position(prefix: str) -> tuple[int, int]:
    """1-based line:col just after `prefix`, the text before the offending character."""
    return prefix.count("\n") + 1, len(prefix) - (prefix.rfind("\n") + 1) + 1


def _lc_entry(node: Any, segment: Any) -> Any:
    """ruamel's [line, col(, value line, value col)] of a key or item, 0-based; None if absent."""
    in_map = isinstance(node, dict) and segment in node
    in_list = isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node)
    data = getattr(getattr(node, "lc", None), "data", None)  # None for a tagged collection's items
    return data.get(segment) if (in_map or in_list) and data is not None else None


def _plain(node: Any, loc: Loc, findings: list[Finding], marks: Marks) -> Any:
    """The ruamel tree as plain dict/list/str/int/float/bool, with non-text keys and tags reported."""
    from ruamel.yaml.comments import TaggedScalar

    tag = str(getattr(getattr(node, "tag", None), "value", None) or "").replace(YAML_TAG_PREFIX, "!!")
    if tag and tag not in STANDARD_TAGS:
        findings.append(Finding(loc, f"YAML tags such as {tag} are not supported"))
    if isinstance(node, dict):
        result = {}
        for key, value in node.items():
            entry = _lc_entry(node, key)
            if entry is not None:
                marks[(*loc, key)] = (entry[0], entry[1], entry[2], entry[3])
            if isinstance(key, str):
                result[str(key)] = _plain(value, (*loc, key), findings, marks)
            else:
                findings.append(Finding((*loc, key), "keys must be text: put this key in quotes", True))
        return result
    if isinstance(node, list):
        for index in range(len(node)):
            entry = _lc_entry(node, index)
            if entry is not None:
                marks[(*loc, index)] = (entry[0], entry[1], entry[0], entry[1])
        return [_plain(item, (*loc, index), findings, marks) for index, item in enumerate(node)]
    for kind in (bool, int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return str(node.value) if isinstance(node, TaggedScalar) else node

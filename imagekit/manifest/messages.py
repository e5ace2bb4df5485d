"""Pydantic's validation errors in the scientist's words, with "did you mean" for unknown keys."""

from __future__ import annotations

import datetime
import difflib
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from imagekit.manifest.loader import Finding, Loc
from imagekit.manifest.model import EXPECTED, Processor

SUPPORTED_SCHEMA_VERSIONS = (1,)
MISSING: dict[Loc, str] = {("schema_version",): "required: start the file with `schema_version: 1`"}


def check_schema_version(data: dict[str, Any]) -> list[Finding]:
    """A version other than 1 is another language: say so once instead of listing every difference."""
    version = data.get("schema_version", 1)
    if type(version) is int and version in SUPPORTED_SCHEMA_VERSIONS:
        return []
    supported = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
    return [
        Finding(("schema_version",), f"got {_show(version)}; this imagekit reads schema_version {supported}")
    ]


def validate_model(data: dict[str, Any]) -> tuple[Processor | None, list[Finding]]:
    """Validate against the model, translating pydantic's errors into the scientist's words."""
    try:
        return Processor.model_validate(data, strict=True), []
    except ValidationError as exc:
        errors = exc.errors()
    findings, suggested = [], set()
    for error in errors:
        if error["type"] == "extra_forbidden":
            finding, suggestion = _unknown_key(error["loc"])
            findings.append(finding)
            suggested.add((*error["loc"][:-1], suggestion))
    for error in errors:
        loc = error["loc"]
        if error["type"] == "missing" and loc not in suggested:
            findings.append(Finding(loc, MISSING.get(loc, "required, but missing")))
        elif error["type"] not in ("missing", "extra_forbidden"):
            at_key = bool(loc) and loc[-1] == "[key]"
            findings.append(Finding(loc[:-1] if at_key else loc, _message(error), at_key))
    return None, findings


def _unknown_key(loc: Loc) -> tuple[Finding, str]:
    known = _known_keys(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(known)}"
    return Finding(loc, f"unknown key '{loc[-1]}'{hint}", True), close[0] if close else ""


def _known_keys(loc: Loc) -> list[str]:
    """The keys the model accepts at `loc`, for "did you mean" hints."""
    annotation: Any = Processor
    for segment in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = {info.alias or name: info for name, info in annotation.model_fields.items()}
            if segment not in fields:
                return []
            annotation = fields[segment].annotation
        elif get_origin(annotation) in (list, dict):
            annotation = get_args(annotation)[-1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [info.alias or name for name, info in annotation.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """`X | None` and `Annotated[X, ...]` as X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
        else:
            return annotation


def _message(error: ErrorDetails) -> str:
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    got = f", got {_show(value)}"
    if kind == "string_pattern_mismatch":
        return f"expected {EXPECTED.get(ctx['pattern'], 'text matching ' + ctx['pattern'])}{got}"
    if kind == "string_type":
        quote = "; put it in quotes" if isinstance(value, int | float | datetime.date) else ""
        return f"expected text{got}{quote}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        return (
            "must have at least one entry" if ctx["min_length"] == 1 else f"needs {ctx['min_length']} entries"
        )
    simple = {
        "int_type": "expected a whole number",
        "int_from_float": "expected a whole number",
        "float_type": "expected a number",
        "finite_number": "expected a finite number",
        "bool_type": "expected true or false",
        "list_type": "expected a list, such as [a, b] or lines starting with '- '",
        "dict_type": "expected a mapping of keys to values",
        "model_type": "expected a mapping of keys to values",
        "greater_than": f"expected a number greater than {ctx.get('gt', 0):g}",
        "greater_than_equal": f"expected {ctx.get('ge', 0):g} or more",
        "less_than_equal": f"expected {ctx.get('le', 0):g} or less",
    }
    if kind in simple:
        return simple[kind] + got
    return f"{error['msg']}{got}"


def _show(value: Any) -> str:
    """A value as the scientist wrote it, short."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return f"the number {_short(str(value))}"
    if isinstance(value, str):
        return repr(_short(value))
    if isinstance(value, datetime.date):
        return f"the date {value}"
    if isinstance(value, dict):
        return "a mapping"
    return "a list" if isinstance(value, list) else f"a {type(value).__name__}"


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."

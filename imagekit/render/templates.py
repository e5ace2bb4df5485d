"""The Jinja2 environment over base_templates/, its filters, and errors that say where.

Templates are files (base_templates/docker/*.j2, apptainer/, dockerignore.j2); this module only
quotes values for Dockerfile and shell syntax, and turns a Jinja failure into a TemplateError
naming the template, its line and the manifest field the failing line reads.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from types import TracebackType

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateSyntaxError
from jinja2 import TemplateError as JinjaError

from imagekit.errors import TemplateError
from imagekit.render.context import FIELD_OF, RenderContext
from imagekit.resources import data_path


def templates_root() -> Path:
    """base_templates/ of this installation (inside the wheel, or beside the package)."""
    return data_path("base_templates")


def _dq(value: str, *, literal_dollar: bool) -> str:
    """A Dockerfile double-quoted word; `$` stays a substitution unless `literal_dollar`."""
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + (escaped.replace("$", "\\$") if literal_dollar else escaped) + '"'


def _dq_sh(value: str) -> str:
    """A POSIX shell double-quoted word: `$VAR` expands as in a Dockerfile ENV, nothing else does."""
    return '"' + re.sub(r'(["\\`])', r"\\\1", str(value)) + '"'


def _sh_text(value: str) -> str:
    """A shell word for any text, on one line: newlines go through printf %b, so no line of a
    definition file can start a new section."""
    text = str(value)
    if "\n" not in text:
        return shlex.quote(text)
    return "\"$(printf '%b' " + shlex.quote(text.replace("\\", "\\\\").replace("\n", "\\n")) + ')"'


def _copy_args(paths: Iterable[str]) -> str:
    words = list(paths)
    if any(re.search(r"\s", word) for word in words):
        return json.dumps(words)
    return " ".join(words)


def environment() -> Environment:
    return _environment(templates_root())


@cache
def _environment(root: Path) -> Environment:
    """One per templates folder and process: a batch render compiles each template once."""
    env = Environment(
        loader=FileSystemLoader(str(root)),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.do"],
    )
    env.filters.update(
        sh=lambda value: shlex.quote(str(value)),
        dq_label=lambda value: _dq(value, literal_dollar=True),
        dq_env=lambda value: _dq(value, literal_dollar=False),
        dq_sh=_dq_sh,
        sh_text=_sh_text,
        copy_args=_copy_args,
        exec_form=lambda words: json.dumps(list(words)),
    )
    env.tests["matching"] = lambda value, pattern: re.search(pattern, str(value)) is not None
    return env


def _template_frames(tb: TracebackType | None, root: Path) -> list[tuple[str, int]]:
    """(template, line) of each template frame in a traceback, innermost first."""
    frames = []
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            path = Path(filename)
            name = str(path.relative_to(root)) if path.is_relative_to(root) else filename
            frames.append((name, tb.tb_lineno))
        tb = tb.tb_next
    return frames[::-1]


_BLOCK = re.compile(r"\{%[-+]?\s*(end)?(for|if|macro|call)\b")


def _field_at(env: Environment, frames: list[tuple[str, int]]) -> str:
    """The manifest field behind the context name a failing line reads, or else the name its
    enclosing block reads (`{% for item in cots %}`), from the innermost template frame out."""
    names = re.compile(rf"\b({'|'.join(sorted(FIELD_OF, key=len, reverse=True))})\b")
    assert env.loader is not None
    for template, line in frames:
        source = env.loader.get_source(env, template)[0].splitlines()[: max(line, 0)]
        found = names.search(source[-1]) if source else None
        if found:
            return FIELD_OF[found.group(1)]
        depth = 0
        for text in reversed(source[:-1]):
            for block in reversed(list(_BLOCK.finditer(text))):
                if block.group(1):
                    depth += 1
                elif depth:
                    depth -= 1
                elif found := names.search(text, block.start()):
                    return FIELD_OF[found.group(1)]
    return ""


def _located(env: Environment, root: Path, frames: list[tuple[str, int]], problem: str) -> TemplateError:
    where = [f"{root.name}/{template}:{line}" for template, line in dict.fromkeys(frames)]
    called = f" (called from {', '.join(where[1:])})" if len(where) > 1 else ""
    field = _field_at(env, frames)
    about = f" (manifest field {field})" if field else ""
    return TemplateError(f"{where[0]}: {problem}{called}{about}")


def render_template(env: Environment, name: str, context: RenderContext, **extra: str) -> str:
    """Render one template with the context's fields as its variables."""
    variables = {field: getattr(context, field) for field in type(context).model_fields}
    assert isinstance(env.loader, FileSystemLoader)
    root = Path(env.loader.searchpath[0])
    try:
        return env.get_template(name).render(**variables, **extra)
    except TemplateSyntaxError as exc:
        frames = [(exc.name or name, exc.lineno)]
        raise _located(env, root, frames, f"template syntax: {exc.message}") from exc
    except (JinjaError, TypeError, ValueError, AttributeError, KeyError) as exc:
        frames = _template_frames(exc.__traceback__, root) or [(name, 0)]
        raise _located(env, root, frames, str(exc)) from exc

"""Render a processor manifest into a layered Dockerfile and its exact build context (step 2).

Public surface: `render`, `RenderResult`, `render_context`, `RenderContext`, `source_info`,
`SourceInfo`, and `render_processor` / `render_processors` (one, or many in one process).
The templates are files under base_templates/; the context is computed without I/O.
"""

from __future__ import annotations

from imagekit.render.batch import Rendered, render_processor, render_processors
from imagekit.render.context import RenderContext, render_context
from imagekit.render.source import SourceInfo, source_info
from imagekit.render.writer import RenderResult, render

__all__ = [
    "RenderContext",
    "RenderResult",
    "Rendered",
    "SourceInfo",
    "render",
    "render_context",
    "render_processor",
    "render_processors",
    "source_info",
]

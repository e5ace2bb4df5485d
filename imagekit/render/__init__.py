"""Render a processor manifest into a layered Dockerfile and its exact build context (step 2).

Public surface: `render`, `RenderResult`, `render_context`, `RenderContext`, `source_info`,
`SourceInfo`, and `render_processor` / `render_processors` (one, or many in one process), which
render into `default_render_dir` (under `WORK_DIR`) unless told otherwise.
The templates are files under base_templates/; the context is computed without I/O.
"""

from __future__ import annotations

from imagekit.render.batch import WORK_DIR, Rendered, default_render_dir, render_processor, render_processors
from imagekit.render.context import RenderContext, render_context
from imagekit.render.source import SourceInfo, source_info
from imagekit.render.writer import RenderResult, render

__all__ = [
    "WORK_DIR",
    "RenderContext",
    "RenderResult",
    "Rendered",
    "SourceInfo",
    "default_render_dir",
    "render",
    "render_context",
    "render_processor",
    "render_processors",
    "source_info",
]

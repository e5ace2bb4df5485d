"""GitLab CI: the `.gitlab-ci.yml` imagekit generates for a processor or a repository of them, and the
checks its jobs make. The jobs themselves live in the central template (`ci_templates/`).

Public surface: `render_pipeline`, `write_pipeline`, `release_version`, `central_template`,
`component_text`, `plain_text`.
"""

from __future__ import annotations

from imagekit.ci.central import component_text, plain_text
from imagekit.ci.render import RenderedPipeline, central_template, render_pipeline, write_pipeline
from imagekit.ci.tags import release_version

__all__ = [
    "RenderedPipeline",
    "central_template",
    "component_text",
    "plain_text",
    "release_version",
    "render_pipeline",
    "write_pipeline",
]

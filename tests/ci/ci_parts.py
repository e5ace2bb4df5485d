"""Shared by the CI tests: GitLab's own CI schema, and a YAML loader that accepts GitLab's `!reference`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT.parent / "shared" / "specs" / "gitlab-ci.schema.json"


class GitlabLoader(yaml.SafeLoader):
    """SafeLoader plus `!reference [job, key]`, loaded as the list it names."""


GitlabLoader.add_constructor(
    "!reference",
    lambda loader, node: loader.construct_sequence(node),  # type: ignore[arg-type]
)


def documents(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=GitlabLoader))


def schema_errors(text: str) -> list[str]:
    """Every schema violation of every YAML document in `text`, as 'path: message'."""
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    return [
        f"document {index}: {'/'.join(map(str, error.absolute_path))}: {error.message}"
        for index, document in enumerate(documents(text))
        for error in validator.iter_errors(document)
    ]

"""`imagekit init`: a processor directory that validates, builds and passes its smoke tests as written.

A scientist starts from something that works and edits it, so every file processor.yaml names is
created too: a tiny Python package, its configuration and the JSON Schema the editor checks with.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from imagekit.errors import InputError
from imagekit.manifest.loader import MANIFEST_NAME
from imagekit.manifest.model import EXPECTED, NAME_PATTERN, json_schema_text

SCHEMA_FILE = "processor.schema.json"
TEMPLATE = Path(__file__).with_name("processor.yaml.in")

INIT_PY = '"""Your processor\'s code."""\n\n__version__ = "0.1.0"\n'
MAIN_PY = '''\
"""`python3 -m PACKAGE`: read the configuration and say hello; replace with your processor."""

import argparse
import tomllib
from pathlib import Path

from . import __version__


def main() -> None:
    parser = argparse.ArgumentParser(prog=__package__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--config", type=Path, default=Path("/opt/processor/conf/settings.toml"))
    args = parser.parse_args()
    settings = tomllib.loads(args.config.read_text(encoding="utf-8"))
    print(settings["greeting"])


main()
'''


def scaffold(directory: Path, name: str | None = None) -> list[Path]:
    """Create a processor directory; never overwrites a file. Returns the files created."""
    directory = Path(directory)
    name = name or _name_from(directory)
    if not re.fullmatch(NAME_PATTERN, name):
        raise InputError(f"'{name}' cannot be a processor name: expected {EXPECTED[NAME_PATTERN]}")
    module = re.sub(r"[.-]", "_", name)
    module = f"p_{module}" if module[0].isdigit() else module
    manifest = Template(TEMPLATE.read_text(encoding="utf-8"))
    files = {
        MANIFEST_NAME: manifest.substitute(name=name, module=module, schema=SCHEMA_FILE),
        SCHEMA_FILE: json_schema_text(),
        f"python/{module}/__init__.py": INIT_PY,
        f"python/{module}/__main__.py": MAIN_PY,
        "conf/settings.toml": f'greeting = "hello from {name}"\n',
    }
    if (directory / MANIFEST_NAME).exists():
        raise InputError(f"{directory / MANIFEST_NAME} already exists: imagekit init never overwrites it")
    taken = [str(directory / path) for path in files if (directory / path).exists()]
    if taken:
        raise InputError(f"imagekit init never overwrites files, and these exist: {', '.join(taken)}")
    created = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        created.append(path)
    return created


def _name_from(directory: Path) -> str:
    """The directory's name made a valid processor name: `My Proc` -> `my-proc`."""
    name = re.sub(r"[^a-z0-9._-]+", "-", directory.resolve().name.lower()).lstrip("._-")[:63]
    return name.rstrip("-") or "my-processor"

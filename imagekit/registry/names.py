"""Names in the registry: the processor's repository, its history beside it, and the tag kinds."""

from __future__ import annotations

import getpass
import os
import re
import socket
from datetime import UTC, datetime

from imagekit.config import Profile

GIT_TAG = re.compile(r"^git-[0-9a-f]{7,40}$")
FALLBACK_TAG = re.compile(r"^sha256-[0-9a-f]{64}$")
HISTORY_SUFFIX = ".history"


def repository(profile: Profile, name: str) -> str:
    """`<registry.project>/<processor name>`."""
    return f"{profile.registry.project}/{name}"


def history_repository(profile: Profile, name: str) -> str:
    """Beside the processor's repository, so that one holds only version, git and channel tags."""
    return repository(profile, name) + HISTORY_SUFFIX


def git_tag(revision: str) -> str | None:
    """`git-<first 12 hex of the revision>`, or None for an image built outside git."""
    return f"git-{revision[:12]}" if re.fullmatch(r"[0-9a-f]{12,40}", revision) else None


def version_tags(tags: list[str], channels: list[str]) -> list[str]:
    """The tags that name versions: neither channels, nor git revisions, nor referrer indexes."""
    return [t for t in tags if t not in channels and not GIT_TAG.match(t) and not FALLBACK_TAG.match(t)]


def who() -> str:
    """`user@host` of whoever runs the command, as recorded in the registry."""
    try:
        user = os.environ.get("GITLAB_USER_LOGIN") or getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def now() -> str:
    """RFC 3339 UTC with microseconds: sortable as text."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

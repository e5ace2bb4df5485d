"""Where a processor's source comes from: the git revision and the time the labels record.

`created` is never the wall clock, so the same revision renders the same bytes: it is
SOURCE_DATE_EPOCH when set, else the commit time. Outside a git work tree (an unpacked tarball)
the revision is "unknown" and `created` is SOURCE_DATE_EPOCH or 1970-01-01T00:00:00Z.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict

from imagekit.errors import InputError

UNKNOWN_REVISION = "unknown"
SHORT_LENGTH = 12
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>[^/].*)$")


class SourceInfo(BaseModel):
    """The provenance the image labels record."""

    model_config = ConfigDict(frozen=True)
    revision: str
    """Full commit sha, or "unknown" outside git."""
    short: str
    """First 12 hex digits of the revision (or "unknown")."""
    created: str
    """RFC 3339 UTC time, from SOURCE_DATE_EPOCH or the commit."""
    source_url: str = ""
    """Web URL of the repository, without credentials; "" when unknown."""
    release_tag: str = ""
    """The git tag the revision is released as (CI_COMMIT_TAG, or a tag on HEAD); "" when none."""

    @property
    def epoch(self) -> int:
        """`created` as seconds since 1970, for engines that clamp times (SOURCE_DATE_EPOCH)."""
        return int(datetime.strptime(self.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(directory: Path, *args: str) -> str:
    """Output of a read-only git command, or "" when git or the repository is not there."""
    try:
        result = subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def web_url(remote: str) -> str:
    """https URL of a git remote: scp-like and ssh forms converted, credentials and .git dropped."""
    remote = remote.strip()
    scp = _SCP_LIKE.match(remote) if "://" not in remote else None
    if scp:
        remote = f"https://{scp.group('host')}/{scp.group('path')}"
    parts = urlsplit(remote)
    if parts.scheme not in {"http", "https", "ssh", "git"} or not parts.hostname:
        return ""
    scheme = "http" if parts.scheme == "http" else "https"
    host = parts.hostname + (f":{parts.port}" if parts.port and parts.scheme in {"http", "https"} else "")
    path = parts.path.rstrip("/").removesuffix(".git")
    return urlunsplit((scheme, host, path, "", ""))


def _source_date_epoch(env: Mapping[str, str]) -> int | None:
    raw = env.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise InputError(f"SOURCE_DATE_EPOCH must be a number of seconds since 1970, got '{raw}'")
    return int(raw)


def source_info(directory: Path, env: Mapping[str, str] = os.environ) -> SourceInfo:
    """Read the revision, commit time and remote of the git work tree holding `directory`."""
    epoch = _source_date_epoch(env)
    revision = _git(directory, "rev-parse", "--verify", "HEAD^{commit}")
    remote = web_url(_git(directory, "remote", "get-url", "origin")) if revision else ""
    source_url = remote or web_url(env.get("CI_PROJECT_URL", ""))
    if not revision:
        return SourceInfo(
            revision=UNKNOWN_REVISION,
            short=UNKNOWN_REVISION,
            created=_rfc3339(epoch or 0),
            source_url=source_url,
            release_tag=env.get("CI_COMMIT_TAG", ""),
        )
    if epoch is None:
        epoch = int(_git(directory, "show", "-s", "--format=%ct", revision) or 0)
    return SourceInfo(
        revision=revision,
        short=revision[:SHORT_LENGTH],
        created=_rfc3339(epoch),
        source_url=source_url,
        release_tag=env.get("CI_COMMIT_TAG", "")
        or _git(directory, "describe", "--tags", "--exact-match", revision),
    )

"""Where a processor's source comes from: the git revision and the time the labels record.

`created` is never the wall clock, so the same revision renders the same bytes: it is
SOURCE_DATE_EPOCH when set, else the commit time. Outside a git work tree (an unpacked tarball)
or before the first commit the revision is "unknown", `created` is SOURCE_DATE_EPOCH or
1970-01-01T00:00:00Z, and `unknown_reason` says why (the CLI warns: no git-<sha> tag). Any other
git failure (git missing, a repository git refuses to read, such as one owned by another user, or
a corrupt one) is an error with git's own words: git's ownership check is never switched off.
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

from imagekit.errors import InputError, MissingPartError, ToolError

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
    unknown_reason: str = ""
    """Why the revision is "unknown" (no git work tree, no commit yet); "" when it is known."""

    @property
    def epoch(self) -> int:
        """`created` as seconds since 1970, for engines that clamp times (SOURCE_DATE_EPOCH)."""
        return int(datetime.strptime(self.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A read-only git command in `directory`; raises when git itself cannot be run."""
    try:
        return subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except FileNotFoundError as exc:
        raise MissingPartError(
            "git", "apt-get install -y git (it reads the revision the image is labelled and tagged with)"
        ) from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"git in {directory}: {exc}") from exc


def _git_failed(directory: Path, result: subprocess.CompletedProcess[str], what: str) -> ToolError:
    """git's own words first, then what failed and where, as the last line."""
    said = result.stderr.strip() or f"git exited {result.returncode}"
    return ToolError(
        f"{said}\ngit cannot {what} for {directory}: do as git says above, or build from a clean clone"
    )


def _has_git_dir(directory: Path) -> bool:
    """Whether `directory` or a parent holds a .git, i.e. git should have found a repository."""
    return any((folder / ".git").exists() for folder in (directory, *directory.parents))


def _revision(directory: Path) -> tuple[str, str]:
    """(full sha, "") of HEAD, or ("", why it is unknown) outside git or before the first commit."""
    directory = directory.absolute()
    if not directory.is_dir():
        return "", f"{directory} is not a directory"
    inside = _git(directory, "rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0:
        if _has_git_dir(directory) or os.environ.get("GIT_DIR"):
            raise _git_failed(directory, inside, "read the repository")
        return "", f"{directory} is not in a git work tree"
    if inside.stdout.strip() != "true":
        return "", f"{directory} is inside a git directory, not a work tree"
    head = _git(directory, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if head.returncode == 0:
        return head.stdout.strip(), ""
    if _git(directory, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
        return "", f"the git work tree at {directory} has no commit yet"
    raise _git_failed(directory, _git(directory, "rev-parse", "--verify", "HEAD^{commit}"), "resolve HEAD")


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
    revision, unknown_reason = _revision(directory)
    if not revision:
        return SourceInfo(
            revision=UNKNOWN_REVISION,
            short=UNKNOWN_REVISION,
            created=_rfc3339(epoch or 0),
            source_url=web_url(env.get("CI_PROJECT_URL", "")),
            release_tag=env.get("CI_COMMIT_TAG", ""),
            unknown_reason=unknown_reason,
        )
    origin = _git(directory, "remote", "get-url", "origin")
    remote = web_url(origin.stdout) if origin.returncode == 0 else ""
    if epoch is None:
        shown = _git(directory, "show", "-s", "--format=%ct", revision)
        if shown.returncode != 0 or not shown.stdout.strip().isdigit():
            raise _git_failed(directory.absolute(), shown, f"read the time of commit {revision}")
        epoch = int(shown.stdout.strip())
    tagged = _git(directory, "describe", "--tags", "--exact-match", revision)
    return SourceInfo(
        revision=revision,
        short=revision[:SHORT_LENGTH],
        created=_rfc3339(epoch),
        source_url=remote or web_url(env.get("CI_PROJECT_URL", "")),
        release_tag=env.get("CI_COMMIT_TAG", "") or (tagged.stdout.strip() if tagged.returncode == 0 else ""),
    )

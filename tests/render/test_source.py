"""source_info reads git, never the wall clock, never leaks credentials into a label, and never
switches off git's ownership check: a git failure is an error, an unknown revision says why."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from imagekit.errors import InputError, MissingPartError, ToolError
from imagekit.render import source_info
from imagekit.render.source import web_url

COMMIT_TIME = "2024-03-05T06:07:08Z"


def git(directory: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_AUTHOR_DATE": COMMIT_TIME,
        "GIT_COMMITTER_DATE": COMMIT_TIME,
        "PATH": "/usr/bin:/bin",
        "HOME": str(directory),
    }
    result = subprocess.run(["git", "-C", str(directory), *args], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(autouse=True)
def no_site_git_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only git's own defaults: a global `safe.directory=*` on this machine must not hide a refusal."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "proc").mkdir(parents=True)
    (repo / "proc" / "processor.yaml").write_text("schema_version: 1\n", encoding="utf-8")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def test_revision_and_commit_time_come_from_git(repository: Path) -> None:
    git(repository, "remote", "add", "origin", "git@gitlab.example.org:eo/processors.git")
    info = source_info(repository / "proc", env={})
    head = git(repository, "rev-parse", "HEAD")
    assert (info.revision, info.short) == (head, head[:12])
    assert info.created == COMMIT_TIME
    assert info.source_url == "https://gitlab.example.org/eo/processors"


def test_source_date_epoch_wins_over_the_commit_time(repository: Path) -> None:
    info = source_info(repository / "proc", env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert info.created == "2023-11-14T22:13:20Z"


def test_ci_project_url_is_the_fallback_without_a_remote(repository: Path) -> None:
    info = source_info(repository, env={"CI_PROJECT_URL": "https://gitlab.example.org/eo/processors"})
    assert info.source_url == "https://gitlab.example.org/eo/processors"


def test_outside_git_the_revision_is_unknown_and_time_is_fixed(tmp_path: Path) -> None:
    assert source_info(tmp_path, env={}).model_dump() == {
        "revision": "unknown",
        "short": "unknown",
        "created": "1970-01-01T00:00:00Z",
        "source_url": "",
        "release_tag": "",
        "unknown_reason": f"{tmp_path} is not in a git work tree",
    }
    assert source_info(tmp_path, env={"SOURCE_DATE_EPOCH": "86400"}).created == "1970-01-02T00:00:00Z"


def test_before_the_first_commit_the_revision_is_unknown_and_says_so(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    info = source_info(tmp_path, env={})
    assert info.revision == "unknown"
    assert info.unknown_reason == f"the git work tree at {tmp_path} has no commit yet"


def test_a_known_revision_has_no_unknown_reason(repository: Path) -> None:
    assert source_info(repository / "proc", env={}).unknown_reason == ""


def test_a_repository_owned_by_another_user_is_an_error_with_gits_words(repository: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a repository's owner needs root; the suite runs as root in CI")
    os.chown(repository, 4242, 4242)
    with pytest.raises(ToolError) as caught:
        source_info(repository / "proc", env={})
    assert "dubious ownership" in caught.value.message
    assert "safe.directory" in caught.value.message, "git's own fix is passed on"
    assert caught.value.exit_code == 1


def test_a_corrupt_repository_is_an_error_not_an_unknown_revision(repository: Path) -> None:
    (repository / ".git" / "HEAD").write_text("garbage\n", encoding="utf-8")
    with pytest.raises(ToolError, match="git cannot read the repository"):
        source_info(repository / "proc", env={})


def test_a_missing_commit_object_is_an_error(repository: Path) -> None:
    head = git(repository, "rev-parse", "HEAD")
    (repository / ".git" / "objects" / head[:2] / head[2:]).unlink()
    with pytest.raises(ToolError, match="git cannot resolve HEAD"):
        source_info(repository / "proc", env={})


def test_git_missing_is_an_error_saying_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(MissingPartError, match="git is missing: apt-get install -y git"):
        source_info(tmp_path, env={})


def test_a_bad_source_date_epoch_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="SOURCE_DATE_EPOCH"):
        source_info(tmp_path, env={"SOURCE_DATE_EPOCH": "yesterday"})


@pytest.mark.parametrize(
    ("remote", "url"),
    [
        (
            "https://gitlab-ci-token:glcbt-s3cr3t@gitlab.example.org/eo/proc.git",
            "https://gitlab.example.org/eo/proc",
        ),
        ("ssh://git@gitlab.example.org:2222/eo/proc.git", "https://gitlab.example.org/eo/proc"),
        ("git@github.com:eo/proc.git", "https://github.com/eo/proc"),
        ("http://git.internal:8080/eo/proc/", "http://git.internal:8080/eo/proc"),
        ("/srv/git/proc.git", ""),
    ],
)
def test_remotes_become_web_urls_without_credentials(remote: str, url: str) -> None:
    assert web_url(remote) == url

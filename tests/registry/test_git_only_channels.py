"""A channel holding a commit pushed as `git-<sha>` only (the default branch) is named by that tag, not
by the version its label says: promote's output, the history and `releases` all say `git-<sha>`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
from registry_parts import run_cli

from imagekit.config import Profile
from imagekit.registry import push, tag_existing

pytestmark = [pytest.mark.registry, pytest.mark.engine]


@pytest.mark.usefixtures("registry_cleanup")
def test_promoting_a_git_only_commit_names_its_git_tag(
    profile: Profile,
    build_image: Callable[..., str],
    mark_scanned: Callable[..., None],
    cli_env: dict[str, str],
) -> None:
    pushed = {}
    for commit in ("a", "b"):  # two default-branch commits, both labelled 1.0.0, neither released
        revision = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        image = build_image("reg-git", "1.0.0", revision=revision)  # the same local tag: pushed at once
        mark_scanned(image)
        result = push(image, profile, git_only=True)
        assert result.tags == (f"git-{revision[:12]}",)
        pushed[commit] = (result.tags[0], result.digest)
    (git_a, digest_a), (git_b, digest_b) = pushed["a"], pushed["b"]

    first = run_cli(cli_env, "promote", "reg-git", git_a, "--channel", "dev")
    assert first.returncode == 0, first.stderr
    assert f"registry: dev: (none) -> {git_a} (labelled 1.0.0; {digest_a}) in " in first.stdout
    assert "-> 1.0.0" not in first.stdout

    second = run_cli(cli_env, "promote", "reg-git", git_b, "--channel", "dev")
    assert second.returncode == 0, second.stderr
    assert f"registry: dev: {git_a} -> {git_b} (labelled 1.0.0; {digest_b}) in " in second.stdout

    listed = json.loads(run_cli(cli_env, "releases", "reg-git", "--json").stdout)
    assert [(v["version"], v["digest"], v["channels"]) for v in listed["versions"]] == [
        (git_b, digest_b, ["dev"])
    ]
    assert listed["versions"][0]["scan_status"] == "passed"
    assert [(c["channel"], c["version"]) for c in listed["channels"]] == [("dev", git_b)]
    assert [m["version"] for m in listed["history"]] == [git_a, git_b]

    tag_existing(profile, "reg-git", "1.0.0", git_a)  # the release tag pipeline: commit a is 1.0.0
    back = run_cli(cli_env, "rollback", "reg-git", "--channel", "dev")
    assert back.returncode == 0, back.stderr
    assert f"registry: dev: {git_b} -> 1.0.0 ({digest_a}) in " in back.stdout
    listed = json.loads(run_cli(cli_env, "releases", "reg-git", "--json").stdout)
    assert [(v["version"], v["channels"]) for v in listed["versions"]] == [("1.0.0", ["dev"])]
    assert [m["version"] for m in listed["history"]] == [git_a, git_b, "1.0.0"]

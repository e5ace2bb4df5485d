"""Push, promote, rollback and releases against the real registry on 127.0.0.1:5000."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable

import pytest
from registry_parts import run_cli, skopeo_digest

from imagekit.config import Profile
from imagekit.errors import PolicyError
from imagekit.registry import RegistryClient, history, promote, push, releases, repository
from imagekit.scan.status import PASSED_UNCHECKED

pytestmark = [pytest.mark.registry, pytest.mark.engine]


@pytest.mark.usefixtures("registry_cleanup")
def test_push_sets_version_and_git_tags_once_and_never_overwrites(
    profile: Profile,
    build_image: Callable[..., str],
    mark_scanned: Callable[..., None],
    cli_env: dict[str, str],
) -> None:
    revision = "0123456789abcdef0123456789abcdef01234567"
    image = build_image("reg-push", "1.0.0", revision=revision)
    mark_scanned(image)
    done = run_cli(cli_env, "push", image)
    assert done.returncode == 0, done.stderr
    repo = repository(profile, "reg-push")
    with RegistryClient.from_profile(profile) as client:
        digest = client.manifest_digest(repo, "1.0.0")
        assert digest and digest in done.stdout
        assert client.manifest_digest(repo, "git-0123456789ab") == digest
        tags = client.tags(repo)
    assert sorted(tags) == sorted(["1.0.0", "git-0123456789ab", "sha256-" + digest.split(":")[1]])
    assert skopeo_digest(f"{profile.registry.url}/{repo}:1.0.0") == digest

    again = run_cli(cli_env, "push", image)
    assert again.returncode == 0 and "already there" in again.stdout and "nothing pushed" in again.stdout

    other = build_image("reg-push", "1.0.0")  # same version, other content
    mark_scanned(other)
    refused = run_cli(cli_env, "push", other)
    assert refused.returncode == 3, refused.stderr
    assert digest in refused.stderr and "immutable" in refused.stderr
    assert skopeo_digest(f"{profile.registry.url}/{repo}:1.0.0") == digest


@pytest.mark.usefixtures("registry_cleanup")
def test_unscanned_push_is_refused_and_a_skip_reason_is_recorded_in_the_registry(
    profile: Profile, build_image: Callable[..., str], cli_env: dict[str, str]
) -> None:
    image = build_image("reg-gate", "2.0.0")
    refused = run_cli(cli_env, "push", image)
    assert refused.returncode == 3 and "imagekit scan" in refused.stderr
    with RegistryClient.from_profile(profile) as client:
        assert client.tags(repository(profile, "reg-gate")) == []
    assert run_cli(cli_env, "push", image, "--skip-scan").returncode == 2

    pushed = run_cli(cli_env, "push", image, "--skip-scan", "--reason", "hotfix for ticket 42")
    assert pushed.returncode == 0, pushed.stderr
    listed = run_cli(cli_env, "releases", "reg-gate", "--json")
    row = json.loads(listed.stdout)["versions"][0]
    assert row["version"] == "2.0.0" and row["scan_skip_reason"] == "hotfix for ticket 42"
    assert row["scan_status"] == "not scanned" and "@" in row["pushed_by"]
    table = run_cli(cli_env, "releases", "reg-gate")
    assert "hotfix for ticket 42" in table.stdout
    # the last channel needs a real pass; a lower one accepts the recorded skip
    assert run_cli(cli_env, "promote", "reg-gate", "2.0.0", "--channel", "production").returncode == 3
    assert run_cli(cli_env, "promote", "reg-gate", "2.0.0", "--channel", "dev").returncode == 0


@pytest.mark.usefixtures("registry_cleanup")
def test_code_only_push_uploads_only_the_new_layer(
    profile: Profile, build_image: Callable[..., str], mark_scanned: Callable[..., None]
) -> None:
    first = build_image("reg-delta", "1.0.0")
    mark_scanned(first)
    cold = push(first, profile)
    second = build_image("reg-delta", "1.0.1")
    mark_scanned(second)
    warm = push(second, profile)
    assert cold.uploaded_blobs >= 3  # config, base layer(s), payload
    assert warm.skipped_blobs == cold.uploaded_blobs - 2  # every base layer is already there
    assert warm.uploaded_blobs == 2  # the new config and the new payload layer
    assert warm.uploaded_bytes < cold.uploaded_bytes / 20


@pytest.mark.usefixtures("registry_cleanup")
def test_promote_rollback_and_pull_what_the_channel_points_at(
    profile: Profile,
    build_image: Callable[..., str],
    mark_scanned: Callable[..., None],
    cli_env: dict[str, str],
    docker_cleanup: list[str],
) -> None:
    digests = {}
    for version in ("1.0.0", "1.1.0"):
        image = build_image("reg-ops", version)
        mark_scanned(image)
        digests[version] = push(image, profile).digest
    for version in ("1.0.0", "1.1.0"):
        done = run_cli(cli_env, "promote", "reg-ops", version, "--channel", "production")
        assert done.returncode == 0, done.stderr
    reference = f"{profile.registry.url}/{repository(profile, 'reg-ops')}:production"
    docker = profile.engine.docker
    docker_cleanup.append(reference)

    def pull_and_run() -> tuple[str, str]:
        subprocess.run([docker, "pull", "-q", reference], check=True, capture_output=True)
        repo_digest = subprocess.run(
            [docker, "image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}", reference],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        ran = subprocess.run(
            [docker, "run", "--rm", "--network", "none", reference], capture_output=True, text=True
        )
        return next(
            d.split("@")[1] for d in repo_digest if d.startswith(reference.rsplit(":", 1)[0])
        ), ran.stdout

    assert pull_and_run() == (digests["1.1.0"], "reg-ops 1.1.0\n")
    assert skopeo_digest(reference) == digests["1.1.0"]
    done = run_cli(cli_env, "rollback", "reg-ops", "--channel", "production")
    assert done.returncode == 0, done.stderr
    assert pull_and_run() == (digests["1.0.0"], "reg-ops 1.0.0\n")

    for bad in (["--to", "9.9.9"], ["--channel", "staging"]):
        args = ["rollback", "reg-ops", *(["--channel", "production"] if "--to" in bad else []), *bad]
        refused = run_cli(cli_env, *args)
        assert refused.returncode == 2, refused.stderr
    assert skopeo_digest(reference) == digests["1.0.0"]

    listed = json.loads(run_cli(cli_env, "releases", "reg-ops", "--json").stdout)
    channel = next(c for c in listed["channels"] if c["channel"] == "production")
    assert channel["version"] == "1.0.0" and channel["digest"] == digests["1.0.0"] and channel["since"]
    assert [(m["action"], m["version"]) for m in listed["history"]] == [
        ("promote", "1.0.0"),
        ("promote", "1.1.0"),
        ("rollback", "1.0.0"),
    ]
    assert {v["version"]: v["channels"] for v in listed["versions"]} == {"1.1.0": [], "1.0.0": ["production"]}


@pytest.mark.usefixtures("registry_cleanup")
def test_last_channel_refuses_a_pass_without_vulnerability_checks(
    profile: Profile, build_image: Callable[..., str], mark_scanned: Callable[..., None]
) -> None:
    image = build_image("reg-unchecked", "1.0.0")
    mark_scanned(image, PASSED_UNCHECKED)
    push(image, profile)
    assert promote(profile, "reg-unchecked", "1.0.0", "test").move is not None
    with pytest.raises(PolicyError, match="vulnerabilities checked"):
        promote(profile, "reg-unchecked", "1.0.0", "production")
    with RegistryClient.from_profile(profile) as client:
        assert client.manifest_digest(repository(profile, "reg-unchecked"), "production") is None


@pytest.mark.usefixtures("registry_cleanup")
def test_concurrent_promotions_keep_every_history_entry(
    profile: Profile, build_image: Callable[..., str], mark_scanned: Callable[..., None]
) -> None:
    for version in ("1.0.0", "2.0.0"):
        image = build_image("reg-race", version)
        mark_scanned(image)
        push(image, profile)
    errors: list[BaseException] = []

    def promote_many(version: str, channel: str) -> None:
        try:
            for _ in range(3):
                promote(profile, "reg-race", version, channel)
                promote(profile, "reg-race", "2.0.0" if version == "1.0.0" else "1.0.0", channel)
        except BaseException as exc:  # collected and re-raised by the test
            errors.append(exc)

    threads = [
        threading.Thread(target=promote_many, args=args) for args in (("1.0.0", "dev"), ("2.0.0", "test"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with RegistryClient.from_profile(profile) as client:
        moves = history(client, profile, "reg-race")
    assert len(moves) == 12 and len({m.id for m in moves}) == 12
    assert [m.id for m in moves] == sorted(m.id for m in moves)
    assert releases(profile, "reg-race").channels[0].channel == "dev"

"""The command line as a user meets it: exit codes, one clear line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

IMAGEKIT = [sys.executable, "-m", "imagekit.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*IMAGEKIT, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120, check=False
    )


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("doctor", "config", "dev", "base"):
        assert command in result.stdout


def test_unknown_option_is_usage_error() -> None:
    result = run("--no-such-flag")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_bad_profile_is_one_line_exit_2(tmp_path: Path) -> None:
    profile = tmp_path / "imagekit.toml"
    profile.write_text("[registry]\nulr = '127.0.0.1:5000'\n", encoding="utf-8")
    result = run("--profile", str(profile), "config", "show")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert str(profile) in last and "unknown key 'ulr'" in last and "did you mean 'url'" in last


def test_engine_that_does_not_exist_is_refused() -> None:
    result = run("--engine", "kaniko", "doctor")
    assert result.returncode == 2
    assert "engine.name" in result.stderr.strip().splitlines()[-1]


def test_config_show_names_each_source(tmp_path: Path) -> None:
    (tmp_path / "imagekit.toml").write_text('[cvmfs]\nrepository = "sw.esa.example"\n', encoding="utf-8")
    result = run(
        "config",
        "show",
        cwd=tmp_path,
        env={"IMAGEKIT_REGISTRY_PROJECT": "eo", "IMAGEKIT_REGISTRY_PASSWORD": "hunter2", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert "sw.esa.example" in result.stdout and "profile" in result.stdout
    assert "environment IMAGEKIT_REGISTRY_PROJECT" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.engine
def test_doctor_names_a_stopped_engine_and_how_to_start_it(tmp_path: Path) -> None:
    """An engine whose socket does not answer is what a stopped dockerd looks like to the client."""
    result = run("doctor", env={"DOCKER_HOST": f"unix://{tmp_path}/stopped.sock", "COLUMNS": "200"})
    assert result.returncode == 1
    assert "engine (docker)" in result.stdout and "MISSING" in result.stdout
    assert "dockerd --iptables=false --ip6tables=false --bridge=none" in result.stderr
    assert "engine (docker)" in result.stderr.strip().splitlines()[-1]


@pytest.mark.engine
@pytest.mark.registry
def test_doctor_passes_on_the_local_environment(local_env: dict[str, object]) -> None:
    result = run("doctor", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "server 20." in result.stdout or "server 2" in result.stdout


def test_doctor_names_an_unreachable_registry() -> None:
    result = run("--registry", "127.0.0.1:9", "doctor", env={"COLUMNS": "200"})
    assert result.returncode == 1
    assert "registry" in result.stderr.strip().splitlines()[-1]


def test_base_pin_records_the_sites_repository(tmp_path: Path) -> None:
    """Without --image, a pin names the base's repository in the site's registry, never an empty one."""
    env = {
        "IMAGEKIT_PATHS_DATA_DIR": str(tmp_path / "data"),
        "IMAGEKIT_REGISTRY_URL": "registry.example.org",
        "IMAGEKIT_REGISTRY_PROJECT": "eo",
    }
    digest = "sha256:" + "b" * 64
    for name in ("debian-12-python", "rocky-9"):
        result = run("base", "pin", name, digest, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{name}: registry.example.org/eo/base/{name}@{digest}"
    override = run("base", "pin", "micromamba", digest, "--image", "registry.example.org/eo/conda", env=env)
    assert override.stdout.strip() == f"micromamba: registry.example.org/eo/conda@{digest}"
    recorded = json.loads((tmp_path / "data" / "bases.json").read_text(encoding="utf-8"))
    assert {name: ref["image"] for name, ref in recorded.items()} == {
        "debian-12-python": "registry.example.org/eo/base/debian-12-python",
        "micromamba": "registry.example.org/eo/conda",
        "rocky-9": "registry.example.org/eo/base/rocky-9",
    }


def test_an_unpinned_site_image_says_what_to_copy_and_pin(tmp_path: Path) -> None:
    env = {"IMAGEKIT_PATHS_DATA_DIR": str(tmp_path / "data"), "GIT_CONFIG_GLOBAL": os.devnull}
    assert run("init", "proc", cwd=tmp_path, env=env).returncode == 0
    manifest = tmp_path / "proc" / "processor.yaml"
    text = manifest.read_text(encoding="utf-8")
    assert "profile: debian-12-python" in text
    manifest.write_text(text.replace("profile: debian-12-python", "profile: rocky-9"), encoding="utf-8")
    result = run("render", "proc", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "base profile 'rocky-9' has no digest recorded on this site" in last
    assert "copy Rocky Linux 9.5" in last and "base/rocky-9 repository" in last
    assert "imagekit base pin rocky-9 DIGEST" in last


def rendered_processor(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A scaffolded processor and a data dir with its base pinned: enough to render, no engine."""
    env = {"IMAGEKIT_PATHS_DATA_DIR": str(tmp_path / "data"), "GIT_CONFIG_GLOBAL": os.devnull}
    assert run("init", "proc", cwd=tmp_path, env=env).returncode == 0
    pin = run(
        "base", "pin", "debian-12-python", "sha256:" + "a" * 64, "--image", "127.0.0.1:5000/x/base", env=env
    )
    assert pin.returncode == 0, pin.stderr
    return tmp_path / "proc", env


def test_render_outside_git_warns_that_there_will_be_no_git_tag(tmp_path: Path) -> None:
    processor, env = rendered_processor(tmp_path)
    result = run("render", "proc", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    warning = "warning: revision unknown, a build of it gets no git-<sha> tag"
    assert f"{warning}: {processor} is not in a git work tree" in result.stderr
    subprocess.run(["git", "init", "-q", str(processor)], check=True)
    subprocess.run(["git", "-C", str(processor), "add", "."], check=True)
    commit = ["-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "first"]
    subprocess.run(["git", "-C", str(processor), *commit], check=True)
    result = run("render", "proc", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr


def test_render_in_a_repository_git_refuses_fails_with_gits_words(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a repository's owner needs root; the suite runs as root in CI")
    processor, env = rendered_processor(tmp_path)
    subprocess.run(["git", "init", "-q", str(processor)], check=True)
    os.chown(processor, 4242, 4242)
    result = run("render", "proc", cwd=tmp_path, env={**env, "GIT_CONFIG_NOSYSTEM": "1"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "dubious ownership" in result.stderr
    assert "safe.directory" in result.stderr, "git's own fix is passed on"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"git cannot read the repository for {processor}")

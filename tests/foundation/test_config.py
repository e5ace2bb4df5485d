"""The site profile: precedence, strictness, and secrets that never show."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagekit.config import load_profile
from imagekit.errors import ProfileError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_embedded_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load_profile(env={"XDG_CONFIG_HOME": str(tmp_path / "nothing")})
    assert loaded.file is None
    assert loaded.profile.registry.url == "127.0.0.1:5000"
    assert loaded.profile.engine.name == "docker"
    assert loaded.profile.cvmfs.backend == "local"
    assert all(source == "default" for _, _, source in loaded.show())


def test_precedence_flag_over_environment_over_file(tmp_path: Path) -> None:
    profile = write(
        tmp_path / "site.toml",
        '[registry]\nurl = "harbor.file.example:443"\nproject = "eo"\n[engine]\nnetwork = "none"\n',
    )
    env = {"IMAGEKIT_REGISTRY_URL": "env.example:5000"}
    loaded = load_profile(str(profile), env=env, flags={"registry.url": "flag.example:5000"})
    assert loaded.profile.registry.url == "flag.example:5000"
    assert loaded.sources["registry.url"] == "command line"
    loaded = load_profile(str(profile), env=env)
    assert loaded.profile.registry.url == "env.example:5000"
    assert loaded.sources["registry.url"] == "environment IMAGEKIT_REGISTRY_URL"
    assert loaded.profile.registry.project == "eo"
    assert loaded.sources["registry.project"] == f"profile {profile}"
    assert loaded.profile.engine.network == "none"


def test_profile_found_in_working_directory_then_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "imagekit").mkdir(parents=True)
    write(xdg / "imagekit" / "imagekit.toml", '[cvmfs]\nrepository = "sw.xdg.example"\n')
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert load_profile(env={"XDG_CONFIG_HOME": str(xdg)}).profile.cvmfs.repository == "sw.xdg.example"
    write(work / "imagekit.toml", '[cvmfs]\nrepository = "sw.cwd.example"\n')
    assert load_profile(env={"XDG_CONFIG_HOME": str(xdg)}).profile.cvmfs.repository == "sw.cwd.example"
    other = write(tmp_path / "other.toml", '[cvmfs]\nrepository = "sw.env.example"\n')
    env = {"XDG_CONFIG_HOME": str(xdg), "IMAGEKIT_PROFILE": str(other)}
    assert load_profile(env=env).profile.cvmfs.repository == "sw.env.example"


def test_list_settings_from_environment_are_comma_separated() -> None:
    env = {"IMAGEKIT_SITE_CA_CERTIFICATES": "/a.crt, /b.crt", "IMAGEKIT_RELEASE_CHANNELS": "dev,prod"}
    profile = load_profile(env=env).profile
    assert profile.site.ca_certificates == ["/a.crt", "/b.crt"]
    assert profile.release.channels == ["dev", "prod"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[registry]\nulr = 'x'\n", "[registry] unknown key 'ulr' (did you mean 'url'?)"),
        ("[regsitry]\nurl = 'x'\n", "unknown section [regsitry] (did you mean 'registry'?)"),
        ("[engine]\nname = 'kaniko'\n", "engine.name: Input should be 'docker', 'podman' or 'buildah'"),
        ("[cvmfs]\nbackend = 's3'\n", "cvmfs.backend: Input should be 'local' or 'cvmfs_server'"),
        ("[engine\nname = 'docker'\n", "not valid TOML"),
        ("engine = 3\n", "'engine' must be a table"),
    ],
)
def test_bad_profile_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    profile = write(tmp_path / "bad.toml", text)
    with pytest.raises(ProfileError) as caught:
        load_profile(str(profile), env={})
    assert expected in caught.value.message
    assert str(profile) in caught.value.message
    assert caught.value.exit_code == 2


def test_unknown_environment_setting_is_refused() -> None:
    with pytest.raises(ProfileError, match=r"IMAGEKIT_REGISTRY_URLL.*did you mean 'IMAGEKIT_REGISTRY_URL'"):
        load_profile(env={"IMAGEKIT_REGISTRY_URLL": "x"})


def test_missing_explicit_profile_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="profile file not found"):
        load_profile(str(tmp_path / "absent.toml"), env={})


def test_credentials_are_named_never_shown(tmp_path: Path) -> None:
    profile = write(tmp_path / "site.toml", '[registry]\npassword_env = "HARBOR_ROBOT_SECRET"\n')
    env = {"HARBOR_ROBOT_SECRET": "s3cr3t-value", "IMAGEKIT_REGISTRY_PASSWORD": "other-secret"}
    loaded = load_profile(str(profile), env=env)
    shown = "\n".join(" ".join(row) for row in loaded.show())
    assert "HARBOR_ROBOT_SECRET" in shown
    assert "s3cr3t-value" not in shown
    assert "other-secret" not in shown


PATHS_FILE = """\
[site]
ca_certificates = ["certs/site-ca.crt", "/etc/ssl/absolute.crt"]
[paths]
data_dir = "state"
[scan]
policy = "../policies/scan.yaml"
[cvmfs]
root = "./tree"
[engine]
docker_binary = "bin/docker"
"""


def test_relative_profile_paths_are_resolved_against_the_profile_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    profile = write(site / "imagekit.toml", PATHS_FILE)
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_profile(str(profile), env={}).profile
    assert loaded.site.ca_certificates == [str(site / "certs/site-ca.crt"), "/etc/ssl/absolute.crt"]
    assert loaded.data_dir == site / "state"
    assert loaded.scan.policy == str(tmp_path / "policies" / "scan.yaml")
    assert loaded.cvmfs_root == site / "tree"
    assert loaded.engine.docker == str(site / "bin" / "docker")


def test_relative_environment_and_flag_paths_are_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = write(tmp_path / "imagekit.toml", PATHS_FILE)
    monkeypatch.chdir(tmp_path / "..")
    cwd = Path.cwd()
    env = {
        "IMAGEKIT_SITE_CA_CERTIFICATES": "a.crt,sub/b.crt",
        "IMAGEKIT_PATHS_DATA_DIR": "env-state",
        "IMAGEKIT_ENGINE_DOCKER_BINARY": "docker",
    }
    loaded = load_profile(str(profile), env=env, flags={"scan.policy": "flag-policy.yaml"}).profile
    assert loaded.site.ca_certificates == [str(cwd / "a.crt"), str(cwd / "sub" / "b.crt")]
    assert loaded.data_dir == cwd / "env-state"
    assert loaded.scan.policy == str(cwd / "flag-policy.yaml")
    assert loaded.engine.docker == "docker", "a bare command name is looked up on PATH, not resolved"
    assert loaded.cvmfs_root == tmp_path / "tree", "the file's value still resolves against the file"


def test_unset_path_settings_keep_their_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    profile = write(
        tmp_path / "imagekit.toml", '[scan]\npolicy = ""\n[paths]\ndata_dir = "~/imagekit-data"\n'
    )
    loaded = load_profile(str(profile), env={}).profile
    assert loaded.scan.policy == ""
    assert loaded.data_dir == Path("~/imagekit-data").expanduser()

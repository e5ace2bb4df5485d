"""`imagekit dev up` and `doctor` with `cvmfs.backend = "cvmfs_server"`.

The "not installed, apt has no candidate" path runs for real on a machine without cvmfs-server in its
apt sources (these machines: Debian has no such package). Repository creation is checked as a command
sequence against the stand-in, whose server.conf is then read back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imagekit.config import Profile
from imagekit.cvmfs import backends
from imagekit.cvmfs.backends import WEB_SERVERS
from imagekit.devenv import cvmfs as devenv_cvmfs
from imagekit.errors import MissingPartError, ToolError

STANDIN = Path(__file__).parent / "standin" / "cvmfs_server"
NO_CANDIDATE = (
    "apt has no cvmfs-server package: configure CERN's CVMFS apt repository in /etc/apt/sources.list.d"
)


def _imagekit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "IMAGEKIT_CVMFS_BACKEND": "cvmfs_server",
        "IMAGEKIT_CVMFS_REPOSITORY": "sw.example.org",
    }
    imagekit = str(Path(sys.executable).parent / "imagekit")
    return subprocess.run(
        [imagekit, *args], capture_output=True, text=True, env=env, check=False, timeout=900
    )


@pytest.mark.slow
def test_missing_server_without_apt_candidate_is_one_clear_error(site_profile: Profile) -> None:
    if shutil.which("cvmfs_server") or devenv_cvmfs.apt_candidate() or os.geteuid() != 0:
        pytest.skip("needs root on a machine without cvmfs_server and without a cvmfs-server apt candidate")
    profile = site_profile.model_copy(deep=True)
    profile.cvmfs.backend = "cvmfs_server"
    lines: list[str] = []
    with pytest.raises(MissingPartError, match=NO_CANDIDATE):
        devenv_cvmfs.ensure_cvmfs_server(profile, lines.append)
    assert lines == ["apt has no cvmfs-server package: refreshing the package lists (apt-get update)"]

    up = _imagekit("dev", "up")
    assert up.returncode == 1
    assert NO_CANDIDATE in up.stderr.strip().splitlines()[-1] and "Traceback" not in up.stderr
    doctor = _imagekit("doctor")
    assert doctor.returncode != 0
    row = next(line for line in doctor.stdout.splitlines() if "cvmfs_server" in line)
    assert "MISSING" in row and "not installed; apt has no" in row
    assert f"cvmfs_server: {NO_CANDIDATE}" in doctor.stdout + doctor.stderr


@pytest.fixture
def standin(
    site_profile: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Profile, Path, Path]:
    profile = site_profile.model_copy(deep=True)
    profile.cvmfs.backend = "cvmfs_server"
    profile.cvmfs.repository = "sw.imagekit.test"
    profile.cvmfs.server_binary = str(STANDIN)
    profile.cvmfs.spool_dir = str(tmp_path / "spool")
    profile.cvmfs.root = str(tmp_path / "cvmfs" / profile.cvmfs.repository)
    etc, log = tmp_path / "etc", tmp_path / "calls.log"
    etc.mkdir()
    log.touch()
    monkeypatch.setattr(devenv_cvmfs, "REPOSITORIES_D", etc)
    monkeypatch.setenv("STANDIN_ETC", str(etc))
    monkeypatch.setenv("STANDIN_SPOOL", profile.cvmfs.spool_dir)
    monkeypatch.setenv("STANDIN_ROOT", profile.cvmfs.root)
    monkeypatch.setenv("STANDIN_LOG", str(log))
    return profile, etc, log


def test_repository_is_created_once_with_the_expected_settings(standin: tuple[Profile, Path, Path]) -> None:
    profile, etc, log = standin
    lines: list[str] = []
    if not any(os.path.isdir(server.etc) for server in WEB_SERVERS):  # mkfs needs one: said, never skipped
        with pytest.raises(MissingPartError, match=r"Apache \(the Stratum 0's web server\) is missing: "):
            devenv_cvmfs.ensure_cvmfs_server(profile, lines.append)
        assert log.read_text().splitlines() == ["list"]
        return
    devenv_cvmfs.ensure_cvmfs_server(profile, lines.append)
    assert backends.web_server_running()
    lines = [line for line in lines if not line.startswith("starting the web server of the Stratum 0")]
    made = ["transaction sw.imagekit.test", "publish sw.imagekit.test"]  # its buckets, in one transaction
    assert log.read_text().splitlines() == ["list", "mkfs -o root -z -g sw.imagekit.test", *made]
    assert len(os.listdir(Path(profile.cvmfs.root) / ".flat")) == 256
    conf = (etc / "sw.imagekit.test" / "server.conf").read_text().splitlines()
    assert conf[0] == "CVMFS_REPOSITORY_NAME=sw.imagekit.test"
    settings = dict(line.split("=", 1) for line in conf)
    assert {key: settings[key] for key in devenv_cvmfs.SETTINGS} == devenv_cvmfs.SETTINGS
    assert len(conf) == len(settings)  # each setting once, mkfs's own lines kept
    assert lines == [
        "creating CVMFS repository sw.imagekit.test (cvmfs_server mkfs -o root -z -g)",
        "sw.imagekit.test: making its 256 missing bucket directories and .cvmfsdirtab (once)",
    ]

    log.write_text("")
    devenv_cvmfs.ensure_cvmfs_server(profile, lines.append)
    assert log.read_text().splitlines() == ["list"]
    created = f"{STANDIN}: repository sw.imagekit.test created; Apache running"
    assert devenv_cvmfs.status(profile)[:2] == (True, created)


def test_failed_mkfs_reports_its_own_words(
    standin: tuple[Profile, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    profile, _, _ = standin
    if not any(os.path.isdir(server.etc) for server in WEB_SERVERS):  # mkfs is not even tried
        with pytest.raises(MissingPartError, match=r"apt-get install -y apache2"):
            devenv_cvmfs.ensure_cvmfs_server(profile, lambda _: None)
        return
    ok, detail, _ = devenv_cvmfs.status(profile)
    assert not ok and detail.startswith(f"{STANDIN}: repository sw.imagekit.test not created; Apache ")
    monkeypatch.setenv("STANDIN_FAIL_MKFS", "Apache must be installed and running")
    with pytest.raises(ToolError, match=r"mkfs sw.imagekit.test failed \(exit 1\): Apache must be installed"):
        devenv_cvmfs.ensure_cvmfs_server(profile, lambda _: None)

"""`imagekit dev up/down` on the real machine: idempotent, and stopping only what it started."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from imagekit.devenv.services import dockerd_host_args, engine_reachable, registry_reachable
from imagekit.errors import ToolError

IMAGEKIT = [sys.executable, "-m", "imagekit.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IMAGEKIT, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=900,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.engine
@pytest.mark.registry
def test_second_dev_up_changes_nothing(local_env: dict[str, object], site_profile) -> None:  # type: ignore[no-untyped-def]
    bases_file = site_profile.data_dir / "bases.json"
    state_file = site_profile.data_dir / "dev" / "state.json"
    before = (bases_file.read_text(), state_file.read_text() if state_file.exists() else "")
    result = run("dev", "up")
    assert result.returncode == 0, result.stderr
    assert "starting" not in result.stderr and "bootstrapping" not in result.stderr
    assert (bases_file.read_text(), state_file.read_text() if state_file.exists() else "") == before
    for name, ref in json.loads(bases_file.read_text()).items():
        assert f"{name}: {ref['image']}@{ref['digest']}" in result.stdout


@pytest.mark.engine
@pytest.mark.registry
def test_down_stops_only_what_up_started(tmp_path: Path, local_env: dict[str, object]) -> None:
    url = f"127.0.0.1:{free_port()}"
    env = {"IMAGEKIT_PATHS_DATA_DIR": str(tmp_path / "data"), "IMAGEKIT_REGISTRY_URL": url}
    try:
        up = run("dev", "up", "--no-bases", env=env)
        assert up.returncode == 0, up.stderr
        assert f"starting docker-registry on {url}" in up.stderr
        state = json.loads((tmp_path / "data" / "dev" / "state.json").read_text())
        assert set(state) == {"registry"}, "dockerd already ran, so up must not claim it"
        assert registry_reachable(url)
        down = run("dev", "down", env=env)
        assert down.returncode == 0, down.stderr
        assert "stopped: registry" in down.stdout
        assert not registry_reachable(url)
        assert engine_reachable("docker"), "down must leave an engine it did not start running"
        assert run("dev", "down", env=env).stdout.strip().endswith("(imagekit started nothing running)")
    finally:
        pid = json.loads((tmp_path / "data" / "dev" / "state.json").read_text()).get("registry")
        if pid and registry_reachable(url):
            os.kill(pid, 15)


@pytest.mark.engine
def test_engine_reachability_goes_through_the_client_and_docker_host(
    local_env: dict[str, object], site_profile, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    assert engine_reachable(site_profile.engine.docker)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/absent.sock")
    assert not engine_reachable(site_profile.engine.docker), "DOCKER_HOST must be where it looks"
    assert not engine_reachable(str(tmp_path / "no-docker")), "the configured client must be the one run"


def test_dockerd_listens_where_docker_host_says() -> None:
    assert dockerd_host_args({}) == []
    assert dockerd_host_args({"DOCKER_HOST": "unix:///run/ik/docker.sock"}) == [
        "--host",
        "unix:///run/ik/docker.sock",
    ]
    with pytest.raises(ToolError, match=r"DOCKER_HOST=tcp://10\.0\.0\.1:2375 does not answer"):
        dockerd_host_args({"DOCKER_HOST": "tcp://10.0.0.1:2375"})


@pytest.mark.engine
@pytest.mark.registry
def test_dev_up_honours_docker_host_and_the_docker_binary(
    tmp_path: Path, local_env: dict[str, object]
) -> None:
    data = {"IMAGEKIT_PATHS_DATA_DIR": str(tmp_path / "data")}
    explicit = run("dev", "up", "--no-bases", env={**data, "DOCKER_HOST": "unix:///var/run/docker.sock"})
    assert explicit.returncode == 0, explicit.stderr
    assert "starting dockerd" not in explicit.stderr

    remote = run("dev", "up", "--no-bases", env={**data, "DOCKER_HOST": "tcp://127.0.0.1:9"})
    assert remote.returncode == 1
    assert "DOCKER_HOST=tcp://127.0.0.1:9 does not answer" in remote.stderr.strip().splitlines()[-1]

    absent = str(tmp_path / "bin" / "docker")
    missing = run("dev", "up", "--no-bases", env={**data, "IMAGEKIT_ENGINE_DOCKER_BINARY": absent})
    assert missing.returncode == 1
    assert f"docker client {absent} is missing" in missing.stderr.strip().splitlines()[-1]
    assert "Traceback" not in explicit.stderr + remote.stderr + missing.stderr


@pytest.mark.registry
def test_starting_the_registry_frees_blobs_no_manifest_references(tmp_path: Path) -> None:
    """Deleted tags leave their blobs on disk; the next start of the embedded registry frees them."""
    import hashlib

    import httpx

    from imagekit.devenv.services import DevState, start_registry, stop

    url = f"127.0.0.1:{free_port()}"
    state = DevState(tmp_path)
    blobs = tmp_path / "dev" / "registry" / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    oci = "application/vnd.oci.image"

    def put_blob(repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = httpx.post(f"http://{url}/v2/{repository}/blobs/uploads/")
        location = httpx.URL(started.headers["Location"])
        location = location if location.is_absolute_url else httpx.URL(f"http://{url}").join(location)
        httpx.put(location.copy_merge_params({"digest": digest}), content=data).raise_for_status()
        return digest

    def put_image(repository: str, layer: bytes) -> tuple[str, str]:
        """Push a one-layer image as `1.0`; (layer digest, manifest digest)."""
        layer_digest, config_digest = put_blob(repository, layer), put_blob(repository, b"{}")
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": f"{oci}.manifest.v1+json",
                "config": {"mediaType": f"{oci}.config.v1+json", "digest": config_digest, "size": 2},
                "layers": [{"mediaType": f"{oci}.layer.v1.tar", "digest": layer_digest, "size": len(layer)}],
            }
        ).encode()
        httpx.put(
            f"http://{url}/v2/{repository}/manifests/1.0",
            content=manifest,
            headers={"Content-Type": f"{oci}.manifest.v1+json"},
        ).raise_for_status()
        return layer_digest, "sha256:" + hashlib.sha256(manifest).hexdigest()

    def data_of(digest: str) -> Path:
        return blobs / digest[7:9] / digest[7:] / "data"

    pid = start_registry(state, url, lambda _: None)
    assert pid is not None
    try:
        kept, _ = put_image("site/kept", b"kept layer")
        dropped, manifest = put_image("site/dropped", b"dropped layer")
        httpx.delete(f"http://{url}/v2/site/dropped/manifests/{manifest}").raise_for_status()
        assert data_of(dropped).is_file()
    finally:
        stop(pid, "docker-registry", lambda _: None)
    pid = start_registry(state, url, lambda _: None)
    assert pid is not None
    try:
        assert not data_of(dropped).exists(), "a blob no manifest references survived the restart"
        assert data_of(kept).is_file(), "a blob a tagged manifest references was removed"
        served = httpx.get(
            f"http://{url}/v2/site/kept/manifests/1.0", headers={"Accept": f"{oci}.manifest.v1+json"}
        )
        assert served.status_code == 200
    finally:
        stop(pid, "docker-registry", lambda _: None)

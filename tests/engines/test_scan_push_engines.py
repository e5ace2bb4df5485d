"""Scan and push images that podman and buildah built (the GitLab template builds with buildah): the
image leaves the engine as an archive for Trivy and as an OCI layout for the push, and the scan status
stays bound to the id the engine reports, which is also the config the registry then serves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagekit.catalog import BaseRef, record_base
from imagekit.config import Profile
from imagekit.engines import Engine, engine_for
from imagekit.engines.buildah import BuildahEngine
from imagekit.errors import InputError
from imagekit.pipeline import build_processor, scan_target
from imagekit.registry import RegistryClient, push
from imagekit.scan import require_passed, scan_status
from imagekit.scan.status import lookup

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.slow]

UNCHECKED = "passed, vulnerabilities not checked"


def _profile_on(
    site_profile: Profile, engine: str, project: str, data_dir: Path, local_env: dict[str, object]
) -> Profile:
    """The site's profile on `engine`, with a registry project and a data directory of the test's own
    (knowing the bases `dev up` bootstrapped), scanning without a vulnerability DB."""
    profile = site_profile.model_copy(deep=True)
    profile.engine.name = engine  # type: ignore[assignment]
    profile.registry.project = project
    profile.paths.data_dir = str(data_dir)
    profile.scan.trivy_db_repository = ""
    profile.scan.vulnerability_db = "when-available"
    for name, ref in local_env.items():
        assert isinstance(ref, BaseRef)
        record_base(data_dir, name, ref)
    return profile


def _registry_config(reference: str) -> str:
    """The config digest of the manifest the registry serves, read with skopeo (an independent client)."""
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return str(json.loads(raw)["config"]["digest"])


@pytest.fixture
def registry_cleanup(site_profile: Profile, test_project: str) -> Iterator[None]:
    """Delete every manifest the test pushed to its own project."""
    yield
    profile = site_profile.model_copy(deep=True)
    profile.registry.project = test_project
    with RegistryClient.from_profile(profile) as client:
        catalog = client.request("GET", "/v2/_catalog?n=10000").json().get("repositories") or []
        for repo in catalog:
            if repo.startswith(test_project + "/"):
                for digest in {client.manifest_digest(repo, tag) for tag in client.tags(repo)} - {None}:
                    client.delete_manifest(repo, str(digest))


@pytest.fixture
def needs(require_part: Callable[[str], None]) -> Callable[[str], None]:
    def need(binary: str) -> None:
        if shutil.which(binary) is None:
            require_part(f"{binary} is not installed: apt-get install -y {binary}")

    return need


@pytest.mark.buildah
def test_buildah_image_on_its_own_storage_is_scanned_and_pushed(
    make_processor,  # type: ignore[no-untyped-def]
    site_profile: Profile,
    local_env: dict[str, object],
    test_project: str,
    registry_cleanup: None,
    needs: Callable[[str], None],
    tmp_path: Path,
) -> None:
    for binary in ("buildah", "skopeo"):
        needs(binary)
    profile = _profile_on(site_profile, "buildah", test_project, tmp_path / "data", local_env)
    engine = engine_for(profile, storage_root=tmp_path / "storage")
    assert isinstance(engine, BuildahEngine)
    try:
        directory = make_processor(runtime_packages=())
        built = build_processor(directory, profile, on_line=lambda _line: None, engine=engine).image
        image = f"{directory.name}:1.0.0"
        assert engine.image_id(image) == built.id
        assert engine.image_id(f"{directory.name}:absent") is None
        # The shared storage does not have it: only the engine's own storage could have been scanned.
        assert engine_for(profile).image_id(image) is None

        result = scan_target(str(directory), profile, reports_root=tmp_path / "scans", engine=engine)
        assert result.status == UNCHECKED, result.decision.rule
        assert result.digest == built.id
        assert json.loads((result.reports / "image.json").read_text())["ArtifactName"] == image
        assert (result.reports / "dockerfile.json").is_file()
        assert scan_status(image, profile.data_dir, engine=engine) == UNCHECKED
        assert not list(profile.data_dir.glob(".scan-export-*")), "the exported archive is removed"

        pushed = push(image, profile, engine=engine)
        reference = f"{profile.registry.url}/{test_project}/{directory.name}:1.0.0"
        assert pushed.scan_status == UNCHECKED and not pushed.already_there
        assert _registry_config(reference) == built.id, "the registry serves the config that was scanned"
        assert push(image, profile, engine=engine).already_there

        with pytest.raises(InputError, match="is not an image on buildah"):
            engine.export(f"{directory.name}:absent", f"docker-archive:{tmp_path / 'absent.tar'}")
    finally:
        engine.discard_storage()


def _imagekit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "imagekit.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _ok(done: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("engine_name", [pytest.param("buildah", marks=pytest.mark.buildah),
                                         pytest.param("podman", marks=pytest.mark.podman)])  # fmt: skip
def test_cli_scans_and_pushes_what_the_engine_built(
    engine_name: str,
    make_processor,  # type: ignore[no-untyped-def]
    site_profile: Profile,
    local_env: dict[str, object],
    test_project: str,
    registry_cleanup: None,
    image_cleanup: Callable[[str], list[str]],
    needs: Callable[[str], None],
    tmp_path: Path,
) -> None:
    """`IMAGEKIT_ENGINE_NAME=<engine> imagekit build|scan|scan --status|push` on the engine's shared
    storage, as a CI job runs them; skopeo then finds the pushed image in the registry."""
    for binary in (engine_name, "podman", "skopeo"):  # podman removes what the test left in the storage
        needs(binary)
    profile = _profile_on(site_profile, engine_name, test_project, tmp_path / "data", local_env)
    directory = make_processor(runtime_packages=())
    image = f"{directory.name}:1.0.0"
    image_cleanup("podman").append(f"localhost/{image}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEKIT_")}
    env |= {
        "IMAGEKIT_ENGINE_NAME": engine_name,
        "IMAGEKIT_REGISTRY_PROJECT": test_project,
        "IMAGEKIT_PATHS_DATA_DIR": str(profile.data_dir),
        "IMAGEKIT_SCAN_TRIVY_DB_REPOSITORY": "",
        "IMAGEKIT_SCAN_VULNERABILITY_DB": "when-available",
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    _ok(_imagekit(env, "build", str(directory), "--quiet"))
    engine: Engine = engine_for(profile)
    image_id = engine.image_id(image)
    assert image_id and image_id.startswith("sha256:")

    # Not scanned yet: the gate refuses the push.
    refused = _imagekit(env, "push", str(directory))
    _ok(refused, 3)
    assert "no scan of this exact content" in refused.stderr

    scanned = _ok(_imagekit(env, "scan", str(directory), "--reports", str(tmp_path / "scans")))
    assert scanned.splitlines()[0].endswith(f": {UNCHECKED}"), scanned
    assert _ok(_imagekit(env, "scan", "--status", str(directory))).strip() == f"{image}: {UNCHECKED}"
    found = lookup(image, profile.data_dir, engine=engine)
    assert found is not None and found.digest == image_id
    assert require_passed(image, profile.data_dir, skip_reason=None, engine=engine) == UNCHECKED

    pushed = _ok(_imagekit(env, "push", str(directory), "--reports", str(tmp_path / "scans")))
    reference = f"{profile.registry.url}/{test_project}/{directory.name}:1.0.0"
    assert f"pushed {profile.registry.url}/{test_project}/{directory.name}:1.0.0" in pushed, pushed
    assert _registry_config(reference) == image_id


def test_docker_export_refuses_an_absent_image_as_bad_input(
    site_profile: Profile, local_env: dict[str, object], tmp_path: Path
) -> None:
    profile = site_profile.model_copy(deep=True)
    profile.engine.name = "docker"  # type: ignore[assignment]
    engine = engine_for(profile)
    absent = "imagekit-test-absent:1"
    assert engine.image_id(absent) is None
    for destination in (f"docker-archive:{tmp_path / 'a.tar'}", f"oci:{tmp_path / 'oci'}:push"):
        with pytest.raises(InputError, match="is not an image on docker: build it first"):
            engine.export(absent, destination)

"""`imagekit status` flags an image on the last channel whose scan used an older vulnerability DB than
the one in `scan.trivy_db_repository` now, and says "not checked" (never "current") when it cannot
tell: against the real registry, with a DB artifact of trivy-db's shape pushed there."""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagekit import release
from imagekit.config import Profile
from imagekit.registry import RegistryClient
from imagekit.registry.scanstate import attach_scan
from imagekit.scan.status import PASSED, ScanRecord

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cvmfs"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scan"))

import trivydb_artifact
from images import E, layer, push_layers
from registry_parts import run_cli

pytestmark = [pytest.mark.registry]
SCANNED_WITH = datetime(2025, 3, 10, 6, 0, tzinfo=UTC)


def _db(updated_at: datetime) -> bytes:
    """db.tar.gz as trivy-db packs it: trivy.db first, then metadata.json."""
    meta = {
        "Version": 2,
        "NextUpdate": (updated_at + timedelta(hours=24)).isoformat().replace("+00:00", "Z"),
        "UpdatedAt": updated_at.isoformat().replace("+00:00", "Z"),
        "DownloadedAt": "0001-01-01T00:00:00Z",
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in (
            ("trivy.db", os.urandom(256 * 1024)),
            ("metadata.json", json.dumps(meta).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def db_repository(profile: Profile) -> Iterator[str]:
    """A DB repository outside the test's project (status lists the project's processors)."""
    repository = f"{profile.registry.project}-db/trivy-db"
    yield repository
    trivydb_artifact.delete_repo_tags(profile.registry.url, repository)


def _in_production(profile: Profile, record: ScanRecord | None) -> None:
    repository = f"{profile.registry.project}/proc"
    code = layer(E("opt", "d", mode=0o755), E("opt/VERSION", "f", "1.0"))
    config = {"Labels": {"org.opencontainers.image.version": "1.0"}, "Cmd": ["/bin/sh"]}
    with RegistryClient.from_profile(profile, push=True) as client:
        digest = push_layers(client, repository, "1.0", [code], config=config)
        manifest = client.find_manifest(repository, digest)
        assert manifest is not None
        attach_scan(
            client, repository, manifest, status=PASSED, record=record, reports=None, skip_reason=None
        )
    release.promote(profile, "proc", "1.0", profile.release.channels[-1])


def _last(profile: Profile) -> release.StatusRow:
    rows = [row for row in release.status(profile) if row.channel == profile.release.channels[-1]]
    assert len(rows) == 1, rows
    return rows[0]


def test_a_production_scan_older_than_the_sites_db_is_flagged(
    profile: Profile, registry_cleanup: None, db_repository: str
) -> None:
    record = ScanRecord(
        digest="sha256:" + "0" * 64,
        image="proc:1.0",
        name="proc",
        version="1.0",
        status=PASSED,
        rule="test",
        scanned_at=SCANNED_WITH + timedelta(hours=1),
        reports="-",
        db_repository=f"{profile.registry.url}/{db_repository}:2",
        db_updated_at=SCANNED_WITH,
    )
    _in_production(profile, record)

    profile.scan.trivy_db_repository = ""
    unknown = _last(profile)
    assert unknown.vulnerability_db == "not checked: no scan.trivy_db_repository is configured"
    assert unknown.problems == []

    profile.scan.trivy_db_repository = f"{profile.registry.url}/{db_repository}:2"
    missing = _last(profile)
    assert (
        missing.vulnerability_db.startswith("not checked: ") and "does not exist" in missing.vulnerability_db
    )

    trivydb_artifact.push_db(profile.registry.url, db_repository, "2", _db(SCANNED_WITH - timedelta(days=1)))
    current = _last(profile)
    assert current.vulnerability_db == "current: built 2025-03-10 06:00"
    assert current.problems == []

    trivydb_artifact.push_db(profile.registry.url, db_repository, "2", _db(SCANNED_WITH + timedelta(days=1)))
    stale = _last(profile)
    assert stale.vulnerability_db == "older: built 2025-03-10 06:00, the site's 2025-03-11 06:00"
    assert stale.problems == [
        "scanned with a vulnerability DB built 2025-03-10 06:00 UTC, older than the site's "
        "(2025-03-11 06:00 UTC): advisories published since were not checked"
    ]
    assert len(list((profile.data_dir / "trivy-db-builds").iterdir())) == 2, "each DB build read once"

    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEKIT_")}
    env.update(
        IMAGEKIT_REGISTRY_URL=profile.registry.url,
        IMAGEKIT_REGISTRY_PROJECT=profile.registry.project,
        IMAGEKIT_PATHS_DATA_DIR=str(profile.data_dir),
        IMAGEKIT_CVMFS_BACKEND="local",
        IMAGEKIT_CVMFS_ROOT=str(profile.cvmfs_root),
        IMAGEKIT_SCAN_TRIVY_DB_REPOSITORY=profile.scan.trivy_db_repository,
        NO_COLOR="1",
        COLUMNS="400",
    )
    shown = run_cli(env, "status")
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "advisories published since were not checked" in shown.stdout
    assert "1 channels inconsistent or unsafe" in shown.stderr


def test_a_scan_record_without_a_db_time_is_not_checked(
    profile: Profile, registry_cleanup: None, db_repository: str
) -> None:
    _in_production(profile, None)  # a pass attached without its record: the DB it used is unknown
    trivydb_artifact.push_db(profile.registry.url, db_repository, "2", _db(SCANNED_WITH))
    profile.scan.trivy_db_repository = f"{profile.registry.url}/{db_repository}"  # the tag defaults to 2
    row = _last(profile)
    assert row.vulnerability_db == "not checked: the scan record in the registry names no DB build time"
    assert row.problems == []

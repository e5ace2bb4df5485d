"""The status store and the push gate, by image id (no engine needed when given a `sha256:` id)."""

from __future__ import annotations

import stat
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from imagekit.errors import InputError, MissingPartError, PolicyError
from imagekit.scan import require_passed, scan_status
from imagekit.scan.status import ScanRecord, image_id, lookup, record

DIGEST = "sha256:" + "b" * 64
OTHER = "sha256:" + "c" * 64


def _record(data_dir: Path, status: str = "passed", valid_until: date | None = None) -> Path:
    return record(
        data_dir,
        ScanRecord(
            digest=DIGEST,
            image="img:1",
            name="demo",
            version="1",
            status=status,
            rule="the rule",
            scanned_at=datetime.now(UTC),
            valid_until=valid_until,
            reports="scans/demo/1",
            db_repository="reg/trivy-db:2",
            db_updated_at=datetime.now(UTC),
        ),
    )


def test_record_is_stored_under_the_digest_and_readable(tmp_path: Path) -> None:
    path = _record(tmp_path)
    assert path == tmp_path / "scans" / f"sha256-{'b' * 64}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    found = lookup(DIGEST, tmp_path)
    assert found is not None
    assert found.rule == "the rule"


@pytest.mark.parametrize("status", ["passed", "failed"])
def test_status_is_what_was_recorded(tmp_path: Path, status: str) -> None:
    _record(tmp_path, status)
    assert scan_status(DIGEST, tmp_path) == status
    assert scan_status(OTHER, tmp_path) == "not scanned"


def test_corrupt_record_counts_as_not_scanned(tmp_path: Path) -> None:
    _record(tmp_path).write_text("{not json")
    assert scan_status(DIGEST, tmp_path) == "not scanned"


def test_pass_lapses_when_its_allowlist_entries_expire(tmp_path: Path) -> None:
    _record(tmp_path, valid_until=date.today())
    assert scan_status(DIGEST, tmp_path) == "passed"
    _record(tmp_path, valid_until=date.today() - timedelta(days=1))
    assert scan_status(DIGEST, tmp_path) == "not scanned"
    with pytest.raises(PolicyError, match="expired after"):
        require_passed(DIGEST, tmp_path, skip_reason=None)


def test_require_passed(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no scan of this exact content") as unscanned:
        require_passed(DIGEST, tmp_path, skip_reason=None)
    assert unscanned.value.exit_code == 3
    _record(tmp_path, "failed")
    with pytest.raises(PolicyError, match=r"its scan failed \(the rule\); reports in scans/demo/1"):
        require_passed(DIGEST, tmp_path, skip_reason=None)
    assert require_passed(DIGEST, tmp_path, skip_reason="emergency fix, ticket 7") == "failed"
    _record(tmp_path, "passed")
    assert require_passed(DIGEST, tmp_path, skip_reason=None) == "passed"


def test_blank_skip_reason_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="must say why"):
        require_passed(DIGEST, tmp_path, skip_reason="  ")


def test_missing_engine_client_is_a_missing_part() -> None:
    with pytest.raises(MissingPartError):
        image_id("img:1", docker="/nonexistent/docker")

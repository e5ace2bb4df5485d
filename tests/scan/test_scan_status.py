"""The status store and the push gate, by image id (no engine needed when given a `sha256:` id)."""

from __future__ import annotations

import stat
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from imagekit.errors import InputError, MissingPartError, PolicyError, ToolError
from imagekit.scan import require_passed, scan_status
from imagekit.scan.status import ScanRecord, image_id, lookup, record

DIGEST = "sha256:" + "b" * 64
OTHER = "sha256:" + "c" * 64


def _record(data_dir: Path, status: str = "passed", valid_until: date | None = None) -> Path:
    checked = status != "passed, vulnerabilities not checked"
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
            db_repository="reg/trivy-db:2" if checked else None,
            db_updated_at=datetime.now(UTC) if checked else None,
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


@pytest.mark.parametrize("status", ["passed", "passed, vulnerabilities not checked", "failed"])
def test_status_is_what_was_recorded(tmp_path: Path, status: str) -> None:
    _record(tmp_path, status)
    assert scan_status(DIGEST, tmp_path) == status
    assert scan_status(OTHER, tmp_path) == "not scanned"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "Invalid JSON"),
        ('{"digest": "sha256:' + "b" * 64 + '"}', "image: Field required"),
        ('{"status": "passed"}', "Field required"),
    ],
)
def test_corrupt_record_is_an_error_that_says_how_to_fix_it(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = _record(tmp_path)
    path.write_text(content)
    for read in (
        lambda: scan_status(DIGEST, tmp_path),
        lambda: require_passed(DIGEST, tmp_path, skip_reason=None),
        lambda: require_passed(DIGEST, tmp_path, skip_reason="a reason does not hide a corrupt record"),
    ):
        with pytest.raises(ToolError, match="is corrupt") as corrupt:
            read()
        assert corrupt.value.exit_code == 1
        assert str(path) in corrupt.value.message and problem in corrupt.value.message
        assert corrupt.value.lines()[0] == f"delete {path} and scan the image again (imagekit scan)"


def test_record_of_another_image_under_this_id_is_corrupt(tmp_path: Path) -> None:
    path = _record(tmp_path)
    path.rename(path.with_name(f"sha256-{'c' * 64}.json"))
    with pytest.raises(ToolError, match=f"it records {DIGEST}, not {OTHER}"):
        scan_status(OTHER, tmp_path)


@pytest.mark.parametrize(
    ("status", "db"),
    [("passed", None), ("passed, vulnerabilities not checked", "reg/trivy-db:2")],
)
def test_a_pass_says_truly_whether_vulnerabilities_were_checked(
    tmp_path: Path, status: str, db: str | None
) -> None:
    with pytest.raises(ValueError, match="vulnerability DB"):
        ScanRecord(
            digest=DIGEST,
            image="img:1",
            name="demo",
            version="1",
            status=status,
            rule="r",
            scanned_at=datetime.now(UTC),
            reports="r",
            db_repository=db,
        )


def test_record_from_before_the_unchecked_state_still_reads(tmp_path: Path) -> None:
    """Records written before `vulnerability_db` existed always named their DB: they stay passes."""
    path = tmp_path / "scans" / f"sha256-{'b' * 64}.json"
    path.parent.mkdir()
    path.write_text(
        '{"digest": "sha256:' + "b" * 64 + '", "image": "img:1", "name": "demo", "version": "1", '
        '"status": "passed", "rule": "r", "scanned_at": "2026-01-01T00:00:00Z", "valid_until": null, '
        '"reports": "scans/demo/1", "db_repository": "reg/trivy-db:2", '
        '"db_updated_at": "2026-01-01T00:00:00Z"}'
    )
    assert scan_status(DIGEST, tmp_path) == "passed"


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
    assert (
        require_passed(DIGEST, tmp_path, skip_reason=None, require_vulnerabilities_checked=True) == "passed"
    )


def test_require_passed_tells_a_pass_without_vulnerability_checks_apart(tmp_path: Path) -> None:
    unchecked = "passed, vulnerabilities not checked"
    _record(tmp_path, unchecked)
    assert require_passed(DIGEST, tmp_path, skip_reason=None) == unchecked
    with pytest.raises(PolicyError, match="without checking vulnerabilities") as refused:
        require_passed(DIGEST, tmp_path, skip_reason=None, require_vulnerabilities_checked=True)
    assert refused.value.exit_code == 3
    assert "scan.trivy_db_repository" in refused.value.lines()[0]
    _record(tmp_path, unchecked, valid_until=date.today() - timedelta(days=1))
    with pytest.raises(PolicyError, match="expired after"):
        require_passed(DIGEST, tmp_path, skip_reason=None)


def test_blank_skip_reason_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="must say why"):
        require_passed(DIGEST, tmp_path, skip_reason="  ")


def test_missing_engine_client_is_a_missing_part() -> None:
    with pytest.raises(MissingPartError):
        image_id("img:1", docker="/nonexistent/docker")

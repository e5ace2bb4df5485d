"""The policy files: the shipped site default, errors that name file and field, stricter-only overrides."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from imagekit.errors import InputError
from imagekit.scan import PROCESSOR_POLICY_FILE, AllowEntry, default_policy_path, load_policy


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_shipped_site_policy_is_the_safe_default() -> None:
    policy = load_policy(default_policy_path())
    assert policy.fail_on == ("CRITICAL", "HIGH")
    assert policy.ignore_unfixed is False
    assert policy.fail_on_licenses == ("forbidden",)
    assert policy.max_db_age_days == 7
    assert policy.allowlist == ()
    assert policy.sources == (str(default_policy_path()),)


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path / "p.yaml", ""))
    assert policy.fail_on == ("CRITICAL", "HIGH")
    assert policy.fail_on_licenses == ("forbidden",)


def test_allowlist_entries_are_read_with_dates(tmp_path: Path) -> None:
    site = _write(
        tmp_path / "p.yaml",
        "fail_on: [HIGH, CRITICAL, MEDIUM]\nallowlist:\n"
        "  - {id: CVE-2024-1, reason: not reachable, expires: 2030-01-31}\n",
    )
    policy = load_policy(site)
    assert policy.fail_on == ("CRITICAL", "HIGH", "MEDIUM")
    assert policy.allowlist == (
        AllowEntry(id="CVE-2024-1", reason="not reachable", expires=date(2030, 1, 31)),
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("fail_on: [SEVERE]\n", "fail_on.0"),
        ("fial_on: [HIGH]\n", "fial_on"),
        ("ignore_unfixed: maybe\n", "ignore_unfixed"),
        ("max_db_age_days: 0\n", "max_db_age_days"),
        ("fail_on_licenses: [evil]\n", "fail_on_licenses.0"),
        ("allowlist:\n  - {id: CVE-1, reason: why}\n", "allowlist.0.expires"),
        ("allowlist:\n  - {id: CVE-1, reason: '  ', expires: 2030-01-01}\n", "allowlist.0.reason"),
        ("allowlist:\n  - {id: CVE-1, reason: why, expires: someday}\n", "allowlist.0.expires"),
        ("allowlist:\n  - {id: CVE-1, reason: why, expires: 2030-01-01, until: x}\n", "allowlist.0.until"),
    ],
)
def test_bad_policy_names_file_and_field(tmp_path: Path, text: str, where: str) -> None:
    path = _write(tmp_path / "policy.yaml", text)
    with pytest.raises(InputError) as bad:
        load_policy(path)
    assert bad.value.exit_code == 2
    assert f"{path}: {where}:" in bad.value.message


@pytest.mark.parametrize(
    "text", ["- a list\n", "fail_on: [HIGH\n", "allowlist:\n  - {id: C, reason: r, expires: 2025-13-01}\n"]
)
def test_unreadable_policy_is_bad_input(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "policy.yaml", text)
    with pytest.raises(InputError, match=str(path)):
        load_policy(path)


def test_missing_policy_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the scan policy"):
        load_policy(tmp_path / "absent.yaml")


def test_processor_override_adds_entries_and_only_tightens(tmp_path: Path) -> None:
    site = _write(
        tmp_path / "site.yaml",
        "fail_on: [CRITICAL]\nignore_unfixed: true\nmax_db_age_days: 7\n"
        "allowlist:\n  - {id: CVE-1, reason: site, expires: 2030-01-01}\n",
    )
    override = _write(
        tmp_path / PROCESSOR_POLICY_FILE,
        "fail_on: [HIGH]\nignore_unfixed: false\nfail_on_licenses: [restricted]\nmax_db_age_days: 2\n"
        "allowlist:\n  - {id: CVE-2, reason: processor, expires: 2030-01-01}\n",
    )
    policy = load_policy(site, override)
    assert policy.fail_on == ("CRITICAL", "HIGH")
    assert policy.ignore_unfixed is False
    assert policy.fail_on_licenses == ("forbidden", "restricted")
    assert policy.max_db_age_days == 2
    assert [entry.id for entry in policy.allowlist] == ["CVE-1", "CVE-2"]
    assert policy.sources == (str(site), str(override))


def test_override_that_lists_fewer_severities_still_keeps_the_sites(tmp_path: Path) -> None:
    site = _write(tmp_path / "site.yaml", "fail_on: [CRITICAL, HIGH]\n")
    override = _write(tmp_path / PROCESSOR_POLICY_FILE, "fail_on: [CRITICAL]\n")
    assert load_policy(site, override).fail_on == ("CRITICAL", "HIGH")


@pytest.mark.parametrize(
    ("text", "field"),
    [("ignore_unfixed: true\n", "ignore_unfixed"), ("max_db_age_days: 30\n", "max_db_age_days")],
)
def test_override_cannot_relax_the_site(tmp_path: Path, text: str, field: str) -> None:
    site = _write(tmp_path / "site.yaml", "ignore_unfixed: false\nmax_db_age_days: 7\n")
    override = _write(tmp_path / PROCESSOR_POLICY_FILE, text)
    with pytest.raises(InputError, match=f"{override}: {field}:"):
        load_policy(site, override)

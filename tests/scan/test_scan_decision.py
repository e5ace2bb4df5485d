"""The gate as data: findings + policy + date -> decision, with the deciding rule named."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from imagekit.scan import AllowEntry, Finding, Policy, decide

TODAY = date(2026, 3, 15)


def vuln(
    ident: str = "CVE-1", severity: str = "CRITICAL", fixed: str = "1.1", package: str = "tar"
) -> Finding:
    return Finding(
        kind="vulnerability",
        id=ident,
        severity=severity,
        source="image",
        package=package,
        installed="1.0",
        fixed=fixed,
    )


def secret(target: str = "conf/id_rsa", source: str = "processor") -> Finding:
    return Finding(kind="secret", id="private-key", severity="HIGH", source=source, target=target)


def misconfig(ident: str = "DS-0002", severity: str = "HIGH", alias: str = "AVD-DS-0002") -> Finding:
    return Finding(
        kind="misconfiguration",
        id=ident,
        severity=severity,
        source="dockerfile",
        target="Dockerfile",
        aliases=(alias,),
    )


def license_(name: str = "AGPL-3.0", category: str = "forbidden") -> Finding:
    return Finding(
        kind="license", id=name, severity="CRITICAL", source="image", package="x", category=category
    )


def allow(ident: str, expires: date, reason: str = "accepted") -> AllowEntry:
    return AllowEntry(id=ident, reason=reason, expires=expires)


def test_nothing_found_passes() -> None:
    decision = decide([], Policy(), TODAY)
    assert decision.passed
    assert (
        decision.rule
        == "no secret, nothing at fail_on [CRITICAL, HIGH], no license in fail_on_licenses [forbidden]"
    )
    assert decision.valid_until is None


def test_failing_severity_fails_and_names_the_rule() -> None:
    decision = decide([vuln()], Policy(), TODAY)
    assert not decision.passed
    assert decision.rule == "fail_on [CRITICAL, HIGH]: 1 finding at a failing severity: CVE-1 in tar"
    assert [v.outcome for v in decision.verdicts] == ["fails"]


@pytest.mark.parametrize("severity", ["MEDIUM", "LOW", "UNKNOWN"])
def test_lower_severities_pass(severity: str) -> None:
    decision = decide([vuln(severity=severity)], Policy(), TODAY)
    assert decision.passed
    assert decision.verdicts[0].outcome == "below threshold"


def test_policy_severities_decide() -> None:
    assert not decide([vuln(severity="MEDIUM")], Policy(fail_on=("MEDIUM",)), TODAY).passed
    assert decide([vuln(severity="CRITICAL")], Policy(fail_on=("MEDIUM",)), TODAY).passed


def test_unfixed_counts_unless_ignored() -> None:
    unfixed = vuln(fixed="")
    assert not decide([unfixed], Policy(ignore_unfixed=False), TODAY).passed
    ignored = decide([unfixed], Policy(ignore_unfixed=True), TODAY)
    assert ignored.passed
    assert ignored.verdicts[0].outcome == "unfixed, not counted"
    assert not decide([vuln(fixed="1.1")], Policy(ignore_unfixed=True), TODAY).passed


@pytest.mark.parametrize(("days", "passed"), [(30, True), (0, True), (-1, False)])
def test_allowlist_suppresses_through_its_expiry_day(days: int, passed: bool) -> None:
    expires = TODAY + timedelta(days=days)
    decision = decide([vuln()], Policy(allowlist=(allow("CVE-1", expires),)), TODAY)
    assert decision.passed is passed
    verdict = decision.verdicts[0]
    assert verdict.entry == allow("CVE-1", expires)
    if passed:
        assert verdict.outcome == "allowlisted"
        assert decision.valid_until == expires
        assert decision.rule.endswith(f"1 finding allowlisted, the first entry expires after {expires}")
    else:
        assert verdict.outcome == "allowlist expired"
        assert verdict.fails
        assert decision.rule == (
            "fail_on [CRITICAL, HIGH]: 1 finding at a failing severity: CVE-1 in tar; "
            f"allowlist expired for CVE-1 (on {expires})"
        )


def test_a_live_entry_wins_over_an_expired_one_and_ids_ignore_case() -> None:
    entries = (allow("cve-1", TODAY - timedelta(days=3)), allow("CVE-1", TODAY + timedelta(days=3)))
    decision = decide([vuln()], Policy(allowlist=entries), TODAY)
    assert decision.passed
    assert decision.verdicts[0].entry == entries[1]


def test_valid_until_is_the_earliest_expiry_relied_on() -> None:
    entries = (allow("CVE-1", TODAY + timedelta(days=9)), allow("CVE-2", TODAY + timedelta(days=2)))
    decision = decide([vuln("CVE-1"), vuln("CVE-2")], Policy(allowlist=entries), TODAY)
    assert decision.passed
    assert decision.valid_until == TODAY + timedelta(days=2)


def test_secrets_always_fail_even_when_allowlisted() -> None:
    policy = Policy(fail_on=(), fail_on_licenses=(), allowlist=(allow("private-key", TODAY),))
    decision = decide([secret()], policy, TODAY)
    assert not decision.passed
    assert decision.rule == "secrets always fail: 1 secret in conf/id_rsa (processor directory)"


def test_secrets_decide_first_and_every_failing_rule_is_kept() -> None:
    findings = [vuln(), license_(), secret("opt/key.pem", "image")]
    decision = decide(findings, Policy(), TODAY)
    assert decision.rule == "secrets always fail: 1 secret in opt/key.pem (image)"
    assert decision.reasons[1].startswith("fail_on [CRITICAL, HIGH]")
    assert decision.reasons[2] == "fail_on_licenses [forbidden]: 1 license: AGPL-3.0 in x"
    assert len(decision.failing) == 3


def test_licenses_fail_by_category_not_severity() -> None:
    assert decide([license_("GPL-2.0", "restricted")], Policy(), TODAY).passed
    assert not decide([license_()], Policy(), TODAY).passed
    entry = allow("AGPL-3.0", TODAY)
    assert decide([license_()], Policy(allowlist=(entry,)), TODAY).passed


def test_misconfiguration_matches_allowlist_by_alias() -> None:
    assert not decide([misconfig()], Policy(), TODAY).passed
    assert decide([misconfig()], Policy(allowlist=(allow("AVD-DS-0002", TODAY),)), TODAY).passed
    assert decide([misconfig(severity="LOW")], Policy(), TODAY).passed


def test_long_lists_are_shortened_in_the_rule() -> None:
    decision = decide([vuln(f"CVE-{n}") for n in range(8)], Policy(), TODAY)
    assert decision.rule.endswith("CVE-4 in tar and 3 more")

"""Reports: swapped in whole or not at all; the summary says what decided and names the files."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from imagekit.scan import AllowEntry, Finding, Policy, ScanResult, decide
from imagekit.scan.report import MAX_ROWS, atomic_dir, render_summary
from imagekit.scan.trivy import DbInfo


def test_atomic_dir_replaces_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "demo" / "1.0"
    with atomic_dir(final) as staging:
        (staging / "summary.md").write_text("first")
    assert (final / "summary.md").read_text() == "first"

    with pytest.raises(RuntimeError), atomic_dir(final) as staging:
        (staging / "summary.md").write_text("half")
        raise RuntimeError("trivy broke")
    assert (final / "summary.md").read_text() == "first"
    assert [p.name for p in final.parent.iterdir()] == ["1.0"]

    with atomic_dir(final) as staging:
        (staging / "sbom.cdx.json").write_text("{}")
    assert sorted(p.name for p in final.iterdir()) == ["sbom.cdx.json"]
    assert [p.name for p in final.parent.iterdir()] == ["1.0"]


def _result(findings: list[Finding], policy: Policy, **changes: object) -> ScanResult:
    now = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
    values: dict[str, object] = {
        "name": "demo",
        "version": "1.0",
        "image": "reg/demo:1.0",
        "digest": "sha256:" + "d" * 64,
        "decision": decide(findings, policy, date(2026, 3, 15)),
        "reports": Path("scans/demo/1.0"),
        "db": DbInfo(repository="reg/trivy-db:2", updated_at=now),
        "trivy_version": "0.76.0",
        "scanned_at": now,
        "os": "debian 12.15",
        "policy_sources": ("scans/policy.yaml",),
        "dockerfile_checked": True,
        "processor_checked": True,
    }
    values.update(changes)
    return ScanResult.model_validate(values)


def _vuln(ident: str, severity: str, fixed: str = "1.1") -> Finding:
    return Finding(
        kind="vulnerability",
        id=ident,
        severity=severity,
        source="image",
        package="tar",
        installed="1.0",
        fixed=fixed,
    )


def test_summary_tables_per_severity_with_verdicts() -> None:
    entry = AllowEntry(id="CVE-3", reason="not | reachable", expires=date(2026, 1, 1))
    findings = [
        _vuln("CVE-1", "CRITICAL"),
        _vuln("CVE-2", "LOW", fixed=""),
        _vuln("CVE-3", "HIGH"),
        Finding(
            kind="secret", id="private-key", severity="HIGH", source="processor", target="conf/id_rsa", line=1
        ),
        Finding(
            kind="misconfiguration", id="DS-0026", severity="LOW", source="dockerfile", title="No HEALTHCHECK"
        ),
        Finding(
            kind="license",
            id="GPL-2.0",
            severity="HIGH",
            source="image",
            package="bash",
            category="restricted",
        ),
    ]
    summary = render_summary(_result(findings, Policy(allowlist=(entry,))))
    lines = summary.splitlines()
    assert lines[0] == "# Security scan: demo 1.0"
    assert lines[2] == "**FAILED**: secrets always fail: 1 secret in conf/id_rsa (processor directory)"
    assert "- also failing: fail_on [CRITICAL, HIGH]: 2 findings at a failing severity" in summary
    assert "| `conf/id_rsa` | processor directory | private-key | 1 |" in lines
    assert "### CRITICAL (1)" in lines
    assert "| CVE-1 | tar | 1.0 | 1.1 | **fails** |" in lines
    assert "| CVE-2 | tar | 1.0 | (no fix) | below threshold |" in lines
    assert (
        "| CVE-3 | tar | 1.0 | 1.1 | **fails**: allowlist entry expired on 2026-01-01, no longer suppresses |"
        in lines
    )
    assert "| DS-0026 | LOW | No HEALTHCHECK | - | below threshold |" in lines
    assert "| restricted | 1 |" in lines
    assert "| Vulnerability DB | `reg/trivy-db:2`, built 2026-03-15 12:00 UTC |" in lines


def test_summary_says_what_was_not_checked_and_caps_tables() -> None:
    findings = [_vuln(f"CVE-{n}", "MEDIUM") for n in range(MAX_ROWS + 5)]
    summary = render_summary(
        _result(findings, Policy(), dockerfile_checked=False, processor_checked=False, os="")
    )
    assert summary.startswith("# Security scan: demo 1.0\n\n**PASSED**: no secret")
    assert "**Not checked**: no rendered Dockerfile was given." in summary
    assert "**Processor directory not checked for secrets**" in summary
    assert "none detected: only language packages were checked" in summary
    assert "… and 5 more in the JSON report." in summary

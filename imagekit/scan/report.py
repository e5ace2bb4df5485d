"""The reports kept under `<reports_root>/<name>/<version>/`, and the short human summary among them.

The directory is built beside its final place and swapped in only when complete, so a scan that
breaks half-way leaves the previous reports exactly as they were.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from imagekit.scan.decision import Verdict
from imagekit.scan.findings import SOURCE_LABELS
from imagekit.scan.policy import SEVERITIES

if TYPE_CHECKING:
    from imagekit.scan.image import ScanResult

MAX_ROWS = 50
"""Rows per table; the raw JSON beside the summary has everything."""


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging directory that replaces `final` only if the block completes."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-"))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        final.rename(retired)
    staging.chmod(0o755)
    staging.rename(final)
    shutil.rmtree(retired, ignore_errors=True)


def _cell(value: object) -> str:
    text = str(value if value is not None else "").replace("\n", " ").replace("|", "\\|")
    return text or "-"


def _outcome(verdict: Verdict) -> str:
    entry = verdict.entry
    if verdict.outcome == "allowlisted" and entry:
        return f"allowlisted until {entry.expires}: {entry.reason}"
    if verdict.outcome == "allowlist expired" and entry:
        return f"**fails**: allowlist entry expired on {entry.expires}, no longer suppresses"
    if verdict.outcome == "fails":
        return "**fails**"
    return verdict.outcome


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        lines.append(f"\n… and {len(rows) - MAX_ROWS} more in the JSON report.")
    return [*lines, ""]


def _section(title: str, verdicts: list[Verdict], *, empty: str) -> list[str]:
    return [f"## {title}", "", *([] if verdicts else [empty, ""])]


def _secrets(verdicts: list[Verdict]) -> list[str]:
    lines = _section("Secrets (always fail)", verdicts, empty="None found.")
    if verdicts:
        rows: list[list[object]] = [
            [f"`{v.finding.target}`", SOURCE_LABELS[v.finding.source], v.finding.id, v.finding.line]
            for v in verdicts
        ]
        lines += _table(["File", "Found in", "Rule", "Line"], rows)
    return lines


NOT_CHECKED = (
    "**Not checked**: no vulnerability DB is configured (scan.trivy_db_repository), and the profile "
    'allows that (scan.vulnerability_db = "when-available").'
)


def _vulnerabilities(verdicts: list[Verdict], checked: bool) -> list[str]:
    if not checked:
        return ["## Vulnerabilities", "", NOT_CHECKED, ""]
    lines = _section("Vulnerabilities", verdicts, empty="None found.")
    for severity in SEVERITIES:
        some = [v for v in verdicts if v.finding.severity == severity]
        if some:
            lines += [f"### {severity} ({len(some)})", ""]
            rows: list[list[object]] = [
                [
                    v.finding.id,
                    v.finding.package,
                    v.finding.installed,
                    v.finding.fixed or "(no fix)",
                    _outcome(v),
                ]
                for v in some
            ]
            lines += _table(["ID", "Package", "Installed", "Fixed", "Verdict"], rows)
    return lines


def _misconfigurations(verdicts: list[Verdict], checked: bool) -> list[str]:
    empty = "None found." if checked else "**Not checked**: no rendered Dockerfile was given."
    lines = _section("Dockerfile misconfigurations", verdicts, empty=empty)
    if verdicts:
        rows: list[list[object]] = [
            [v.finding.id, v.finding.severity, v.finding.title, v.finding.line, _outcome(v)] for v in verdicts
        ]
        lines += _table(["ID", "Severity", "Title", "Line", "Verdict"], rows)
    return lines


def _licenses(verdicts: list[Verdict]) -> list[str]:
    lines = _section("Licenses", verdicts, empty="None found.")
    if verdicts:
        counts = Counter(v.finding.category for v in verdicts)
        lines += _table(["Category", "Findings"], [[c, n] for c, n in counts.most_common()])
        judged = [v for v in verdicts if v.outcome != "below threshold"]
        if judged:
            rows: list[list[object]] = [
                [v.finding.id, v.finding.package or v.finding.target, v.finding.category, _outcome(v)]
                for v in judged
            ]
            lines += _table(["License", "Package", "Category", "Verdict"], rows)
    return lines


def render_summary(result: ScanResult) -> str:
    """summary.md: the verdict and the rule that decided it first, then one section per scanner."""
    decision = result.decision
    verdicts = list(decision.verdicts)

    def of(kind: str) -> list[Verdict]:
        return [v for v in verdicts if v.finding.kind == kind]

    db = result.db
    db_row = f"`{db.repository}`, built {db.updated_at:%Y-%m-%d %H:%M %Z}" if db else "none: not checked"
    lines = [
        f"# Security scan: {result.name} {result.version}",
        "",
        f"**{result.status.upper()}**: {decision.rule}",
        "",
        *[f"- also failing: {reason}" for reason in decision.reasons[1:]],
        *([""] if decision.reasons[1:] else []),
        *_table(
            ["Field", "Value"],
            [
                ["Image", f"`{result.image}`"],
                ["Digest (image id)", f"`{result.digest}`"],
                ["Operating system", result.os or "none detected: only language packages were checked"],
                ["Scanned at", f"{result.scanned_at:%Y-%m-%d %H:%M:%S %Z}"],
                ["Trivy", result.trivy_version],
                ["Vulnerability DB", db_row],
                ["Policy", ", ".join(f"`{source}`" for source in result.policy_sources)],
            ],
        ),
        *_secrets(of("secret")),
        *_vulnerabilities(of("vulnerability"), result.vulnerabilities_checked),
        *_misconfigurations(of("misconfiguration"), result.dockerfile_checked),
        *_licenses(of("license")),
    ]
    if not result.processor_checked:
        lines += ["**Processor directory not checked for secrets**: none was given.", ""]
    return "\n".join(lines).rstrip() + "\n"


def brief(result: ScanResult) -> list[str]:
    """The few lines a terminal shows after a scan: status, one count per scanner, the rule, where."""
    verdicts = list(result.decision.verdicts)

    def count(kind: str) -> str:
        found = [v for v in verdicts if v.finding.kind == kind]
        failing = sum(1 for v in found if v.fails)
        return f"{len(found)} found, {failing} failing"

    vulnerabilities = (
        count("vulnerability")
        if result.vulnerabilities_checked
        else 'not checked: no vulnerability DB (scan.vulnerability_db = "when-available")'
    )
    misconfigurations = count("misconfiguration") if result.dockerfile_checked else "not checked"
    return [
        f"{result.image} ({result.digest}): {result.status}",
        f"  vulnerabilities:   {vulnerabilities}",
        f"  secrets:           {count('secret')}",
        f"  misconfigurations: {misconfigurations}",
        f"  licenses:          {count('license')}",
        f"  rule:              {result.decision.rule}",
        f"  reports:           {result.summary}",
    ]

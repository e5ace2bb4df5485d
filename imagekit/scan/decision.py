"""The gate: a pure function from findings, policy and date to a decision naming the rule that decided."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict

from imagekit.scan.findings import SOURCE_LABELS, Finding
from imagekit.scan.policy import AllowEntry, Policy

Outcome = Literal["fails", "allowlist expired", "allowlisted", "unfixed, not counted", "below threshold"]
FAILING: tuple[Outcome, ...] = ("fails", "allowlist expired")


class Verdict(BaseModel):
    """What the policy made of one finding, and the allowlist entry involved if any."""

    model_config = ConfigDict(frozen=True)

    finding: Finding
    outcome: Outcome
    entry: AllowEntry | None = None

    @property
    def fails(self) -> bool:
        return self.outcome in FAILING


class Decision(BaseModel):
    """Passed or not, the rule that decided (first failing rule, or why it passed), every verdict."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    rule: str
    reasons: tuple[str, ...] = ()
    """Every failing rule, the deciding one first."""
    verdicts: tuple[Verdict, ...] = ()
    valid_until: date | None = None
    """Last day the allowlist entries this pass relied on still suppress; after it, rescan."""

    @property
    def failing(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.fails]


def _judge(finding: Finding, policy: Policy, today: date) -> Verdict:
    if finding.kind == "secret":
        return Verdict(finding=finding, outcome="fails")
    if finding.kind == "license":
        if finding.category not in policy.fail_on_licenses:
            return Verdict(finding=finding, outcome="below threshold")
    elif finding.severity not in policy.fail_on:
        return Verdict(finding=finding, outcome="below threshold")
    elif finding.unfixed and policy.ignore_unfixed:
        return Verdict(finding=finding, outcome="unfixed, not counted")
    entries = [entry for entry in policy.allowlist if entry.matches(finding.ids)]
    active = [entry for entry in entries if entry.active(today)]
    if active:
        return Verdict(finding=finding, outcome="allowlisted", entry=max(active, key=lambda e: e.expires))
    if entries:
        return Verdict(
            finding=finding, outcome="allowlist expired", entry=max(entries, key=lambda e: e.expires)
        )
    return Verdict(finding=finding, outcome="fails")


def _names(verdicts: list[Verdict], *, limit: int = 5) -> str:
    names: list[str] = []
    for verdict in verdicts:
        finding = verdict.finding
        name = f"{finding.id} in {finding.package}" if finding.package else finding.id
        if name not in names:
            names.append(name)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _expired_note(verdicts: list[Verdict]) -> str:
    expired = sorted(
        {(v.entry.id, v.entry.expires) for v in verdicts if v.entry and v.outcome == "allowlist expired"}
    )
    if not expired:
        return ""
    return "; allowlist expired for " + ", ".join(f"{i} (on {d.isoformat()})" for i, d in expired)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def decide(findings: list[Finding], policy: Policy, today: date) -> Decision:
    """Judge every finding; secrets always fail, then `fail_on`, then `fail_on_licenses`."""
    verdicts = [_judge(finding, policy, today) for finding in findings]
    failing = [v for v in verdicts if v.fails]
    secrets = [v for v in failing if v.finding.kind == "secret"]
    graded = [v for v in failing if v.finding.kind in ("vulnerability", "misconfiguration")]
    licenses = [v for v in failing if v.finding.kind == "license"]
    fail_on = f"fail_on [{', '.join(policy.fail_on)}]"
    fail_on_licenses = f"fail_on_licenses [{', '.join(policy.fail_on_licenses)}]"
    reasons = []
    if secrets:
        files = sorted({f"{v.finding.target} ({SOURCE_LABELS[v.finding.source]})" for v in secrets})
        reasons.append(f"secrets always fail: {_plural(len(secrets), 'secret')} in {', '.join(files)}")
    if graded:
        reasons.append(
            f"{fail_on}: {_plural(len(graded), 'finding')} at a failing severity: "
            f"{_names(graded)}{_expired_note(graded)}"
        )
    if licenses:
        reasons.append(f"{fail_on_licenses}: {_plural(len(licenses), 'license')}: {_names(licenses)}")
    if reasons:
        return Decision(passed=False, rule=reasons[0], reasons=tuple(reasons), verdicts=tuple(verdicts))
    relied_on = [v.entry.expires for v in verdicts if v.outcome == "allowlisted" and v.entry]
    valid_until = min(relied_on, default=None)
    rule = f"no secret, nothing at {fail_on}, no license in {fail_on_licenses}"
    if valid_until:
        count = _plural(len(relied_on), "finding")
        rule += f"; {count} allowlisted, the first entry expires after {valid_until.isoformat()}"
    return Decision(passed=True, rule=rule, verdicts=tuple(verdicts), valid_until=valid_until)

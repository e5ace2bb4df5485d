"""Trivy's JSON reports turned into one flat list of findings, so the gate is judged on plain data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from imagekit.scan.policy import SEVERITIES, Severity

Kind = Literal["vulnerability", "secret", "misconfiguration", "license"]
Source = Literal["image", "dockerfile", "processor"]
"""Which scan saw it: the built image, the rendered Dockerfile, the processor's directory."""
SOURCE_LABELS: dict[Source, str] = {
    "image": "image",
    "dockerfile": "Dockerfile",
    "processor": "processor directory",
}


class Finding(BaseModel):
    """One thing Trivy reported; `id` is what an allowlist entry names."""

    model_config = ConfigDict(frozen=True)

    kind: Kind
    id: str
    severity: Severity
    source: Source
    target: str = ""
    """The file (secrets, misconfigurations) or Trivy's target (e.g. `img (debian 12.8)`)."""
    package: str = ""
    installed: str = ""
    fixed: str = ""
    title: str = ""
    category: str = ""
    """License category (forbidden, restricted, ...) or secret category."""
    line: int | None = None
    aliases: tuple[str, ...] = ()

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)

    @property
    def unfixed(self) -> bool:
        return self.kind == "vulnerability" and not self.fixed


def _severity(value: Any) -> Severity:
    text = str(value or "").upper()
    for severity in SEVERITIES:
        if text == severity:
            return severity
    return "UNKNOWN"


def _vulnerability(result: dict[str, Any], item: dict[str, Any], source: Source) -> Finding:
    return Finding(
        kind="vulnerability",
        id=item["VulnerabilityID"],
        severity=_severity(item.get("Severity")),
        source=source,
        target=item.get("PkgPath") or result.get("Target", ""),
        package=item.get("PkgName", ""),
        installed=item.get("InstalledVersion", ""),
        fixed=item.get("FixedVersion", ""),
        title=item.get("Title", ""),
        aliases=tuple(item.get("VendorIDs") or ()),
    )


def _secret(result: dict[str, Any], item: dict[str, Any], source: Source) -> Finding:
    return Finding(
        kind="secret",
        id=item.get("RuleID", "secret"),
        severity=_severity(item.get("Severity")),
        source=source,
        target=result.get("Target", ""),
        title=item.get("Title", ""),
        category=item.get("Category", ""),
        line=item.get("StartLine"),
    )


def _misconfiguration(result: dict[str, Any], item: dict[str, Any], source: Source) -> Finding:
    return Finding(
        kind="misconfiguration",
        id=item["ID"],
        severity=_severity(item.get("Severity")),
        source=source,
        target=result.get("Target", ""),
        title=item.get("Title", ""),
        aliases=tuple(alias for alias in (item.get("AVDID"),) if alias),
        line=(item.get("CauseMetadata") or {}).get("StartLine"),
    )


def _license(result: dict[str, Any], item: dict[str, Any], source: Source) -> Finding:
    return Finding(
        kind="license",
        id=item["Name"],
        severity=_severity(item.get("Severity")),
        source=source,
        target=item.get("FilePath") or result.get("Target", ""),
        package=item.get("PkgName", ""),
        category=str(item.get("Category", "unknown")).lower(),
    )


def parse_report(report: dict[str, Any], source: Source) -> list[Finding]:
    """Every finding of one Trivy JSON report (image, config or fs), in report order, deduplicated."""
    findings: dict[Finding, None] = {}
    for result in report.get("Results") or []:
        for item in result.get("Vulnerabilities") or []:
            findings[_vulnerability(result, item, source)] = None
        for item in result.get("Secrets") or []:
            findings[_secret(result, item, source)] = None
        for item in result.get("Misconfigurations") or []:
            if item.get("Status", "FAIL") == "FAIL":
                findings[_misconfiguration(result, item, source)] = None
        for item in result.get("Licenses") or []:
            findings[_license(result, item, source)] = None
    return list(findings)

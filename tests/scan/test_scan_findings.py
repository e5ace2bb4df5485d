"""Trivy's JSON report shapes (0.76) flattened into findings."""

from __future__ import annotations

from imagekit.scan import Finding
from imagekit.scan.findings import parse_report

IMAGE_REPORT = {
    "Metadata": {"ImageID": "sha256:" + "a" * 64, "OS": {"Family": "debian", "Name": "12.15"}},
    "Results": [
        {
            "Target": "img (debian 12.15)",
            "Class": "os-pkgs",
            "Vulnerabilities": [
                {
                    "VulnerabilityID": "CVE-2099-1",
                    "PkgName": "tar",
                    "InstalledVersion": "1.34",
                    "FixedVersion": "1.35",
                    "Severity": "CRITICAL",
                    "Title": "t",
                    "VendorIDs": ["DSA-1-1"],
                },
                {
                    "VulnerabilityID": "CVE-2099-2",
                    "PkgName": "apt",
                    "InstalledVersion": "2.6",
                    "Severity": "odd",
                },
            ],
        },
        {
            "Target": "opt/app/requirements.txt",
            "Class": "lang-pkgs",
            "Vulnerabilities": [
                {
                    "VulnerabilityID": "GHSA-x",
                    "PkgName": "requests",
                    "PkgPath": "opt/app/venv/requests",
                    "InstalledVersion": "2.0",
                    "FixedVersion": "2.32",
                    "Severity": "HIGH",
                }
            ],
        },
        {
            "Target": "opt/conf/key.pem",
            "Class": "secret",
            "Secrets": [
                {
                    "RuleID": "private-key",
                    "Category": "AsymmetricPrivateKey",
                    "Severity": "HIGH",
                    "StartLine": 2,
                }
            ],
        },
        {
            "Target": "OS Packages",
            "Class": "license",
            "Licenses": [
                {"Severity": "HIGH", "Category": "restricted", "PkgName": "bash", "Name": "GPL-3.0-only"},
                {"Severity": "HIGH", "Category": "restricted", "PkgName": "bash", "Name": "GPL-3.0-only"},
            ],
        },
        {"Target": "empty", "Class": "os-pkgs", "Vulnerabilities": None},
    ],
}


def test_image_report_flattens_every_kind_and_drops_duplicates() -> None:
    findings = parse_report(IMAGE_REPORT, "image")
    assert [(f.kind, f.id) for f in findings] == [
        ("vulnerability", "CVE-2099-1"),
        ("vulnerability", "CVE-2099-2"),
        ("vulnerability", "GHSA-x"),
        ("secret", "private-key"),
        ("license", "GPL-3.0-only"),
    ]
    tar, apt, lang, key, gpl = findings
    assert tar == Finding(
        kind="vulnerability",
        id="CVE-2099-1",
        severity="CRITICAL",
        source="image",
        target="img (debian 12.15)",
        package="tar",
        installed="1.34",
        fixed="1.35",
        title="t",
        aliases=("DSA-1-1",),
    )
    assert tar.ids == ("CVE-2099-1", "DSA-1-1")
    assert apt.severity == "UNKNOWN"
    assert apt.unfixed
    assert not tar.unfixed
    assert lang.target == "opt/app/venv/requests"
    assert (key.target, key.line, key.category) == ("opt/conf/key.pem", 2, "AsymmetricPrivateKey")
    assert (gpl.package, gpl.category) == ("bash", "restricted")


def test_config_report_keeps_only_failures() -> None:
    report = {
        "Results": [
            {
                "Target": "Dockerfile",
                "Class": "config",
                "Misconfigurations": [
                    {"ID": "DS-0002", "Title": "root", "Severity": "HIGH", "Status": "FAIL"},
                    {
                        "ID": "DS-0029",
                        "AVDID": "AVD-DS-0029",
                        "Severity": "HIGH",
                        "Status": "FAIL",
                        "CauseMetadata": {"StartLine": 2},
                    },
                    {"ID": "DS-0001", "Severity": "MEDIUM", "Status": "PASS"},
                ],
            }
        ]
    }
    findings = parse_report(report, "dockerfile")
    assert [(f.id, f.aliases, f.line) for f in findings] == [
        ("DS-0002", (), None),
        ("DS-0029", ("AVD-DS-0029",), 2),
    ]
    assert {f.source for f in findings} == {"dockerfile"}


def test_report_without_results_has_no_findings() -> None:
    assert parse_report({"SchemaVersion": 2}, "processor") == []
    assert parse_report({"Results": None}, "processor") == []

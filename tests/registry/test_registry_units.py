"""The choices that need no registry: referrers API or tag schema, names, gates, Harbor's report."""

from __future__ import annotations

import json

import pytest

from imagekit.errors import InputError, PolicyError, ToolError
from imagekit.registry.attach import Part, artifact_manifest, fallback_tag, mode_from_headers
from imagekit.registry.channels import gate
from imagekit.registry.client import OCI_MANIFEST, Manifest, sha256_digest
from imagekit.registry.harbor import immutability_rule, vulnerability_counts
from imagekit.registry.names import git_tag, version_tags
from imagekit.registry.scanstate import RegistryScan

SUBJECT = Manifest(
    raw=b'{"schemaVersion":2}', media_type=OCI_MANIFEST, digest=sha256_digest(b'{"schemaVersion":2}')
)


def test_referrers_api_only_where_the_registry_confirms_the_subject() -> None:
    assert mode_from_headers({"OCI-Subject": SUBJECT.digest}) == "referrers API"
    assert mode_from_headers({"oci-subject": SUBJECT.digest}) == "referrers API"
    assert mode_from_headers({"Docker-Content-Digest": "sha256:x"}) == "tag schema"
    assert fallback_tag("sha256:" + "ab" * 32) == "sha256-" + "ab" * 32


def test_artifact_manifest_points_at_its_subject_with_an_empty_config() -> None:
    raw = artifact_manifest(
        "application/x-test", [Part("a.json", "application/json", b"{}")], {"k": "v"}, SUBJECT
    )
    body = json.loads(raw)
    assert body["subject"] == {"mediaType": OCI_MANIFEST, "digest": SUBJECT.digest, "size": len(SUBJECT.raw)}
    assert body["config"]["mediaType"] == "application/vnd.oci.empty.v1+json" and body["config"]["size"] == 2
    assert body["artifactType"] == "application/x-test" and body["annotations"] == {"k": "v"}
    assert body["layers"][0]["annotations"]["org.opencontainers.image.title"] == "a.json"
    empty = json.loads(artifact_manifest("application/x-test", [], {}, None))
    assert "subject" not in empty and empty["layers"][0]["size"] == 2


def test_tag_kinds() -> None:
    tags = ["1.0.0", "git-0123456789ab", "dev", "production", "sha256-" + "a" * 64, "2024.03"]
    assert version_tags(tags, ["dev", "test", "production"]) == ["1.0.0", "2024.03"]
    assert git_tag("0123456789abcdef0123") == "git-0123456789ab"
    assert git_tag("unknown") is None


@pytest.mark.parametrize(
    ("scan", "last", "allowed"),
    [
        (RegistryScan("passed"), True, True),
        (RegistryScan("passed, vulnerabilities not checked"), False, True),
        (RegistryScan("passed, vulnerabilities not checked"), True, False),
        (RegistryScan("not scanned", skip_reason="hotfix"), False, True),
        (RegistryScan("passed", skip_reason="hotfix"), True, False),
        (RegistryScan("failed"), False, False),
        (RegistryScan("not scanned"), False, False),
    ],
)
def test_channel_gate(scan: RegistryScan, last: bool, allowed: bool) -> None:
    if allowed:
        gate(scan, "c", last, "img")
    else:
        with pytest.raises(PolicyError):
            gate(scan, "c", last, "img")


def test_a_channel_that_an_immutability_rule_would_freeze_is_refused() -> None:
    assert immutability_rule(["dev", "production"]).tag_selectors
    with pytest.raises(InputError, match="2024"):
        immutability_rule(["dev", "2024"])
    with pytest.raises(InputError, match="git-main"):
        immutability_rule(["git-main"])


def test_harbor_vulnerability_report_object_and_the_spec_string() -> None:
    report = {"application/vnd.security.vulnerability.report; version=1.1": {"vulnerabilities": [
        {"id": "CVE-1", "severity": "High"}, {"id": "CVE-2", "severity": "Critical"}, {"id": "CVE-3"},
    ]}}  # fmt: skip
    counts = vulnerability_counts(report)
    assert counts == {"Critical": 1, "High": 1, "Medium": 0, "Low": 0, "Unknown": 1}
    assert vulnerability_counts(json.dumps(report)) == counts
    with pytest.raises(ToolError):
        vulnerability_counts("string")

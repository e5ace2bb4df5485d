"""End to end: real engine, real Trivy, real registry serving a small real Trivy DB."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from scan_parts import FIXED_CVE, UNFIXED_CVE, BaseImage, Db, run

from imagekit.engines.docker import DockerEngine
from imagekit.errors import InputError, MissingPartError, PolicyError, ToolError
from imagekit.scan import ScanFailed, ScanResult, load_policy, require_passed, scan_image, scan_status

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.registry]

TODAY = date.today()
Scan = Callable[..., ScanResult]


def _policy(tmp_path: Path, allow: Sequence[str] = (), expires: date | None = None) -> Path:
    entries = [
        {"id": ident, "reason": "planted by the tests", "expires": (expires or TODAY).isoformat()}
        for ident in allow
    ]
    path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(json.dumps({"fail_on": ["CRITICAL", "HIGH"], "allowlist": entries}))
    return path


def _private_key() -> str:
    """A PEM-shaped RSA private key block (random bytes: Trivy matches the shape, not the maths)."""
    body = base64.b64encode(os.urandom(1190)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END RSA PRIVATE KEY-----\n"


@pytest.fixture
def scan(fresh_db: Db, trivy: str, docker: str, tmp_path: Path) -> Iterator[Scan]:
    """scan_image against the fresh DB, with reports, status and any cache under this test's tmp_path,
    all removed afterwards (the reports are a few MB per scan)."""

    def _scan(image: str, policy: Path, **overrides: object) -> ScanResult:
        arguments: dict[str, Any] = {
            "name": "demo",
            "version": "1.0.0",
            "dockerfile": None,
            "processor_dir": None,
            "policy": load_policy(policy),
            "db_repository": fresh_db.repository,
            "reports_root": tmp_path / "scans",
            "cache_dir": fresh_db.cache_dir,
            "data_dir": tmp_path / "data",
            "trivy": trivy,
            "engine": DockerEngine(docker, network="none", insecure_registries=[]),
        }
        arguments.update(overrides)
        return scan_image(image, **arguments)

    yield _scan
    for child in tmp_path.iterdir():
        if child.is_dir():
            shutil.rmtree(child)


@pytest.fixture
def rebuilt_image(base_image: BaseImage, docker: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The base image plus one file: new content, new image id. Yields (ref, its Dockerfile)."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "extra.txt").write_text("one more file\n")
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(
        f'FROM {base_image.ref}\nCOPY extra.txt /opt/extra.txt\nUSER 65534:65534\nHEALTHCHECK CMD ["true"]\n'
    )
    ref = base_image.ref.replace(":base", ":rebuilt")
    run(docker, "build", "--network", "host", "-t", ref, str(context), timeout=300)
    try:
        yield ref, dockerfile
    finally:
        subprocess.run([docker, "rmi", "-f", ref], capture_output=True, check=False)


def test_planted_vulnerability_fails_the_gate(
    scan: Scan, base_image: BaseImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIVY_IGNORE_UNFIXED", "true")  # must not hide the unfixed apt CVE
    with pytest.raises(ScanFailed) as failed:
        scan(base_image.ref, _policy(tmp_path))
    result = failed.value.result
    assert failed.value.exit_code == 3
    assert not result.passed
    assert result.decision.rule.startswith("fail_on [CRITICAL, HIGH]")
    assert FIXED_CVE in result.decision.rule
    failing = {(v.finding.id, v.finding.package) for v in result.decision.failing}
    assert {(FIXED_CVE, "tar"), (UNFIXED_CVE, "apt")} <= failing

    reports = tmp_path / "scans" / "demo" / "1.0.0"
    assert result.reports == reports
    assert sorted(p.name for p in reports.iterdir()) == ["image.json", "sbom.cdx.json", "summary.md"]
    # Trivy read an exported archive; the report names the image, and the archive is gone.
    image_report = json.loads((reports / "image.json").read_text())
    assert image_report["ArtifactName"] == base_image.ref
    assert image_report["Metadata"]["ImageID"] == result.digest
    targets = [r["Target"] for r in image_report["Results"]]
    assert f"{base_image.ref} (debian 12" in " ".join(targets), targets
    assert not any("image.tar" in target for target in targets), targets
    assert not list((tmp_path / "data").glob(".scan-export-*"))
    sbom = json.loads((reports / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert any(c.get("name") == "tar" for c in sbom["components"])
    summary = (reports / "summary.md").read_text()
    assert "**FAILED**: fail_on [CRITICAL, HIGH]" in summary
    assert (
        f"| {FIXED_CVE} | tar | {base_image.tar_version} | {base_image.tar_version}+imagekit1 | **fails** |"
        in summary
    )
    assert "### CRITICAL (1)" in summary

    data = tmp_path / "data"
    assert scan_status(base_image.ref, data) == "failed"
    assert scan_status(result.digest, data) == "failed"
    with pytest.raises(PolicyError, match="its scan failed"):
        require_passed(base_image.ref, data, skip_reason=None)


def test_allowlist_passes_until_it_expires(scan: Scan, base_image: BaseImage, tmp_path: Path) -> None:
    allow = [FIXED_CVE, UNFIXED_CVE]
    data = tmp_path / "data"

    result = scan(base_image.ref, _policy(tmp_path, allow, TODAY + timedelta(days=30)))
    assert result.passed
    assert result.decision.valid_until == TODAY + timedelta(days=30)
    assert {v.outcome for v in result.decision.verdicts if v.finding.id in allow} == {"allowlisted"}
    assert "allowlisted until" in result.summary.read_text()
    assert scan_status(base_image.ref, data) == "passed"
    assert require_passed(base_image.ref, data, skip_reason=None) == "passed"

    with pytest.raises(ScanFailed) as failed:
        scan(base_image.ref, _policy(tmp_path, allow, TODAY - timedelta(days=1)))
    expired_on = (TODAY - timedelta(days=1)).isoformat()
    assert f"allowlist expired for {FIXED_CVE} (on {expired_on})" in failed.value.result.decision.rule
    assert f"allowlist entry expired on {expired_on}" in failed.value.result.summary.read_text()
    assert scan_status(base_image.ref, data) == "failed"


def test_private_key_in_processor_conf_fails_and_is_named(
    scan, base_image: BaseImage, tmp_path: Path
) -> None:
    processor = tmp_path / "processors" / "demo"
    (processor / "conf").mkdir(parents=True)
    (processor / "processor.yaml").write_text("name: demo\n")
    (processor / "conf" / "id_rsa").write_text(_private_key())
    rendered = processor / ".imagekit" / "docker"  # the rendered build context holds a copy
    shutil.copytree(processor / "conf", rendered / "conf")
    # Everything else allowlisted, even the secret rule's id: secrets still fail.
    policy = _policy(tmp_path, [FIXED_CVE, UNFIXED_CVE, "private-key"], TODAY + timedelta(days=1))

    with pytest.raises(ScanFailed) as failed:
        scan(base_image.ref, policy, processor_dir=processor, processor_skip=(".imagekit",))
    rule = failed.value.result.decision.rule
    assert rule == "secrets always fail: 1 secret in conf/id_rsa (processor directory)"
    summary = failed.value.result.summary.read_text()
    assert "| `conf/id_rsa` | processor directory | private-key |" in summary
    assert (failed.value.result.reports / "processor-secrets.json").is_file()


def test_rebuilt_image_is_not_scanned(
    scan: Scan, base_image: BaseImage, rebuilt_image: tuple[str, Path], tmp_path: Path
) -> None:
    ref, dockerfile = rebuilt_image
    data = tmp_path / "data"
    with pytest.raises(ScanFailed):
        scan(base_image.ref, _policy(tmp_path))
    assert scan_status(base_image.ref, data) == "failed"

    assert scan_status(ref, data) == "not scanned"
    with pytest.raises(PolicyError, match="no scan of this exact content"):
        require_passed(ref, data, skip_reason=None)
    assert require_passed(ref, data, skip_reason="hotfix, scanned by hand (ticket 42)") == "not scanned"

    # Scanned with its (clean) Dockerfile and the planted CVEs allowlisted, it has its own status.
    policy = _policy(tmp_path, [FIXED_CVE, UNFIXED_CVE], TODAY + timedelta(days=1))
    result = scan(ref, policy, version="1.0.1", dockerfile=dockerfile)
    assert result.passed, result.decision.rule
    assert (result.reports / "dockerfile.json").is_file()
    assert scan_status(ref, data) == "passed"
    assert scan_status(base_image.ref, data) == "failed"


def test_dockerfile_misconfiguration_fails(scan: Scan, base_image: BaseImage, tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {base_image.ref}\nRUN apt-get install -y curl\n")
    policy = _policy(tmp_path, [FIXED_CVE, UNFIXED_CVE], TODAY + timedelta(days=1))
    with pytest.raises(ScanFailed) as failed:
        scan(base_image.ref, policy, dockerfile=dockerfile)
    misconfigs = {v.finding.id for v in failed.value.result.decision.failing}
    assert "DS-0002" in misconfigs  # runs as root


def test_failed_scan_leaves_previous_reports(
    scan, base_image: BaseImage, registry: str, tmp_path: Path
) -> None:
    with pytest.raises(ScanFailed):
        scan(base_image.ref, _policy(tmp_path))
    summary = tmp_path / "scans" / "demo" / "1.0.0" / "summary.md"
    before = summary.read_text()

    with pytest.raises(ToolError, match="fetch the vulnerability DB") as broken:
        scan(
            base_image.ref,
            _policy(tmp_path),
            db_repository=f"{registry}/imagekit-test-absent/trivy-db:2",
            cache_dir=tmp_path / "empty-cache",
        )
    assert broken.value.exit_code == 1
    assert summary.read_text() == before
    assert [p.name for p in summary.parent.parent.iterdir()] == ["1.0.0"]


def test_unreachable_db_repository_is_a_tool_error(scan: Scan, base_image: BaseImage, tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="connection refused"):
        scan(
            base_image.ref,
            _policy(tmp_path),
            db_repository="127.0.0.1:9/imagekit/trivy-db:2",
            cache_dir=tmp_path / "empty-cache",
        )
    assert scan_status(base_image.ref, tmp_path / "data") == "not scanned"


def test_stale_db_is_a_tool_error(scan: Scan, base_image: BaseImage, stale_db: Db, tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=r"is stale: built .*, 30 days ago, the policy allows 7"):
        scan(
            base_image.ref, _policy(tmp_path), db_repository=stale_db.repository, cache_dir=stale_db.cache_dir
        )


def test_no_db_repository_refuses_to_scan(scan: Scan, base_image: BaseImage, tmp_path: Path) -> None:
    with pytest.raises(MissingPartError, match=r"scan\.trivy_db_repository") as missing:
        scan(base_image.ref, _policy(tmp_path), db_repository="")
    assert missing.value.exit_code == 1
    assert 'scan.vulnerability_db is "required"' in missing.value.message
    assert scan_status(base_image.ref, tmp_path / "data") == "not scanned"


def test_without_a_db_when_available_checks_all_but_vulnerabilities(
    scan: Scan, base_image: BaseImage, tmp_path: Path
) -> None:
    """The planted CVEs cannot fail a scan that has no DB; everything else still runs and is kept."""
    unchecked = "passed, vulnerabilities not checked"
    result = scan(
        base_image.ref,
        _policy(tmp_path),
        db_repository="",
        vulnerability_db_required=False,
        cache_dir=tmp_path / "empty-cache",
    )
    assert result.status == unchecked and result.db is None
    image_report = json.loads((result.reports / "image.json").read_text())
    assert not any(r.get("Vulnerabilities") for r in image_report["Results"])
    assert any(r.get("Packages") for r in image_report["Results"]), "packages are still listed"
    assert any(r.get("Licenses") for r in image_report["Results"]), "licenses are still checked"
    sbom = json.loads((result.reports / "sbom.cdx.json").read_text())
    assert any(c.get("name") == "tar" for c in sbom["components"])
    summary = result.summary.read_text()
    assert f"**{unchecked.upper()}**" in summary
    assert "## Vulnerabilities\n\n**Not checked**: no vulnerability DB" in summary

    data = tmp_path / "data"
    assert scan_status(base_image.ref, data) == unchecked
    assert require_passed(base_image.ref, data, skip_reason=None) == unchecked
    with pytest.raises(PolicyError, match="without checking vulnerabilities"):
        require_passed(base_image.ref, data, skip_reason=None, require_vulnerabilities_checked=True)

    # A secret still fails it, with no DB as with one.
    processor = tmp_path / "processor"
    processor.mkdir()
    (processor / "id_rsa").write_text(_private_key())
    with pytest.raises(ScanFailed) as failed:
        scan(
            base_image.ref,
            _policy(tmp_path),
            db_repository="",
            vulnerability_db_required=False,
            processor_dir=processor,
        )
    assert failed.value.result.status == "failed"
    assert scan_status(base_image.ref, data) == "failed"


def test_image_not_in_the_engine_is_bad_input(scan: Scan, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not in the local engine"):
        scan(f"imagekit-scan-test-absent-{uuid.uuid4().hex[:8]}:1", _policy(tmp_path))

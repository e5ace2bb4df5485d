"""The scan as users meet it: an example processor built by imagekit on the bootstrapped base, scanned
with the installed `imagekit` from a directory of the user's own, relative arguments, default options,
and the Trivy DB served by `dev up`'s registry."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from scan_parts import FIXED_CVE, UNFIXED_CVE, Db

from imagekit.catalog import BaseRef, record_base
from imagekit.errors import PolicyError
from imagekit.scan import require_passed

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.registry]

EXAMPLE = Path(__file__).resolve().parents[2] / "processors" / "s2-cloudmask-demo"
VERSION = "0.3.0"
UNCHECKED = "passed, vulnerabilities not checked"


class User:
    """A user's working directory with a copy of the example under a name of this test's own."""

    def __init__(self, home: Path, docker_cleanup: list[str]) -> None:
        self.home = home
        self.name = f"scan-test-{uuid.uuid4().hex[:8]}"
        self.processor = home / "work" / "s2"
        shutil.copytree(EXAMPLE, self.processor, ignore=shutil.ignore_patterns(".imagekit"))
        manifest = self.processor / "processor.yaml"
        text = manifest.read_text(encoding="utf-8")
        manifest.write_text(
            text.replace("name: s2-cloudmask-demo", f"name: {self.name}", 1), encoding="utf-8"
        )
        self.state = home / "state"
        self.image = f"{self.name}:{VERSION}"
        docker_cleanup.append(self.image)

    @property
    def reports(self) -> Path:
        return self.home / "scans" / self.name / VERSION

    def imagekit(self, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
        """The installed console script in the user's directory; `settings` as IMAGEKIT_SCAN_<KEY>."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("IMAGEKIT_SCAN_", "IMAGEKIT_PROFILE"))
        }
        env |= {"IMAGEKIT_PATHS_DATA_DIR": str(self.state), "COLUMNS": "200"}
        env |= {f"IMAGEKIT_SCAN_{key.upper()}": value for key, value in settings.items()}
        done = subprocess.run(
            [str(Path(sys.executable).parent / "imagekit"), *args],
            cwd=self.home,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done


def _said(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, f"exit {done.returncode}, expected {code}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def user(tmp_path: Path, local_env: dict[str, object], docker_cleanup: list[str]) -> Iterator[User]:
    """A user whose data directory knows the bases `dev up` bootstrapped (and nothing else of this
    machine's state: the Trivy cache and scan records stay in the test's directory)."""
    user = User(tmp_path / "home", docker_cleanup)
    for name, ref in local_env.items():
        assert isinstance(ref, BaseRef)
        record_base(user.state, name, ref)
    built = user.imagekit("build", "work/s2", "--quiet")
    assert f"built {user.image}" in _said(built, 0)
    yield user
    shutil.rmtree(user.home, ignore_errors=True)


def test_built_example_is_gated_on_the_sites_vulnerability_db(user: User, fresh_db: Db) -> None:
    refused = user.imagekit("scan", "work/s2")
    _said(refused, 1)
    assert 'scan.vulnerability_db is "required"' in refused.stderr.strip().splitlines()[-1]
    assert not (user.home / "scans").exists()

    failed = _said(user.imagekit("scan", "work/s2", trivy_db_repository=fresh_db.repository), 3)
    assert failed.splitlines()[0].endswith(": failed")
    rule = next(line for line in failed.splitlines() if line.startswith("  rule:"))
    assert "fail_on [CRITICAL, HIGH]: 3 findings at a failing severity:" in rule, failed
    assert f"{FIXED_CVE} in tar" in rule and f"{UNFIXED_CVE} in apt" in rule, failed
    assert "vulnerabilities:   3 found, 3 failing" in failed
    assert sorted(p.name for p in user.reports.iterdir()) == [
        "dockerfile.json",
        "image.json",
        "processor-secrets.json",
        "sbom.cdx.json",
        "summary.md",
    ]
    assert f"reports:           {user.reports / 'summary.md'}" in failed
    assert _said(user.imagekit("scan", "--status", "work/s2"), 3).strip() == f"{user.image}: failed"

    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    (user.processor / "scan-policy.yaml").write_text(
        "allowlist:\n"
        + "".join(
            f"  - {{id: {cve}, reason: planted by the test, expires: {tomorrow}}}\n"
            for cve in (FIXED_CVE, UNFIXED_CVE)
        )
    )
    passed = _said(user.imagekit("scan", "work/s2", trivy_db_repository=fresh_db.repository), 0)
    assert passed.splitlines()[0].endswith(": passed")
    assert "vulnerabilities:   3 found, 0 failing" in passed, passed
    assert _said(user.imagekit("scan", "--status", "work/s2"), 0).strip() == f"{user.image}: passed"
    assert (
        require_passed(user.image, user.state, skip_reason=None, require_vulnerabilities_checked=True)
        == "passed"
    )


def test_built_example_without_a_db_passes_with_vulnerabilities_not_checked(user: User) -> None:
    scanned = _said(user.imagekit("scan", "work/s2", vulnerability_db="when-available"), 0)
    assert scanned.splitlines()[0].endswith(f": {UNCHECKED}")
    assert (
        'vulnerabilities:   not checked: no vulnerability DB (scan.vulnerability_db = "when-available")'
        in scanned
    )
    assert "secrets:           0 found, 0 failing" in scanned
    summary = (user.reports / "summary.md").read_text()
    assert f"**{UNCHECKED.upper()}**" in summary
    sbom = json.loads((user.reports / "sbom.cdx.json").read_text())
    assert any(c.get("name") == "libgomp1" for c in sbom["components"]), "the SBOM lists the image's packages"

    status = user.imagekit("scan", "--status", "work/s2")
    assert _said(status, 0).strip() == f"{user.image}: {UNCHECKED}"
    assert require_passed(user.image, user.state, skip_reason=None) == UNCHECKED
    with pytest.raises(PolicyError, match="without checking vulnerabilities"):
        require_passed(user.image, user.state, skip_reason=None, require_vulnerabilities_checked=True)


def test_a_planted_key_is_reported_once_per_place_not_again_from_the_rendered_context(user: User) -> None:
    body = base64.b64encode(os.urandom(1190)).decode()
    key = "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *(body[i : i + 64] for i in range(0, len(body), 64))])
    (user.processor / "conf" / "id_rsa").write_text(key + "\n-----END RSA PRIVATE KEY-----\n")
    _said(user.imagekit("build", "work/s2", "--quiet"), 0)
    assert (user.processor / ".imagekit" / "docker" / "conf" / "id_rsa").is_file()

    failed = _said(user.imagekit("scan", "work/s2", vulnerability_db="when-available"), 3)
    assert (
        "rule:              secrets always fail: 2 secrets in /opt/processor/conf/id_rsa (image), "
        "conf/id_rsa (processor directory)"
    ) in failed
    found = json.loads((user.reports / "processor-secrets.json").read_text())
    assert [result["Target"] for result in found["Results"]] == ["conf/id_rsa"]

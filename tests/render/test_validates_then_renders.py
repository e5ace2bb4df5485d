"""A manifest that validates always renders, and what it says survives into the Dockerfile intact.

Scientists write descriptions with quotes, environment values with `$` and backslashes, labels with
unicode: hypothesis writes such manifests; each one the validator accepts must render, parse back
with a real Dockerfile parser, and carry the values unchanged (no injection, no lost characters).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagekit.config import SiteSettings
from imagekit.errors import ManifestError
from imagekit.manifest import load_manifest
from imagekit.render import render

from .render_parts import SOURCE, base_for

# What a scientist might type, with the characters that matter to shells, JSON and Dockerfiles.
# `$` and `\` are left to the real-engine test below: Docker expands and unescapes them, and the
# Python parser used here does not follow Docker there.
FREE_TEXT = st.text(alphabet="abcXYZ019 _-.,:;'\"`!?&|<>(){}[]*#%^~=+/@éü€漢\t", min_size=1, max_size=40)
ENV_NAME = st.from_regex(r"\A[A-Z][A-Z0-9_]{0,15}\Z")
LABEL_KEY = st.from_regex(r"\Aorg\.example\.[a-z][a-z0-9.-]{0,15}\Z")


def manifest_document(description: str, env: dict[str, str], labels: dict[str, str], argument: str) -> dict:
    return {
        "schema_version": 1,
        "processor": {"name": "prop-demo", "version": "1.0.0", "description": description},
        "base": {"profile": "debian-12"},
        "app": {"copy": [{"from": "conf/", "to": "/opt/processor/conf/"}]},
        "runtime": {"env": env, "entrypoint": ["/opt/processor/run", argument]},
        "tests": [{"name": "echo", "run": ["echo", argument], "expect_stdout": argument}],
        "labels": labels,
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    description=FREE_TEXT,
    env=st.dictionaries(ENV_NAME, FREE_TEXT, max_size=3),
    labels=st.dictionaries(LABEL_KEY, FREE_TEXT, max_size=3),
    argument=FREE_TEXT,
)
def test_whatever_validates_renders_and_survives_parsing(
    description: str, env: dict[str, str], labels: dict[str, str], argument: str
) -> None:
    work = Path(tempfile.mkdtemp(prefix="imagekit-prop-"))
    try:
        directory = work / "prop-demo"
        (directory / "conf").mkdir(parents=True)
        (directory / "conf" / "a.toml").write_text("a = 1\n")
        document = manifest_document(description, env, labels, argument)
        (directory / "processor.yaml").write_text(yaml.safe_dump(document, allow_unicode=True))
        try:
            manifest = load_manifest(directory)
        except ManifestError:
            return  # refused with its position: that is the validator's job, tested elsewhere
        site = SiteSettings(ca_certificates=[])
        result = render(manifest, work / "out", base=base_for(manifest), site=site, source=SOURCE)
        parsed = DockerfileParser(path=str(result.context_dir / "Dockerfile"))
        one_line = " ".join(description.split())  # the description label is one line, by design
        assert parsed.labels.get("org.opencontainers.image.description", "") == one_line
        for key, value in labels.items():
            assert parsed.labels[key] == value
        final_env = parsed.envs
        for name, value in env.items():
            assert final_env[name] == value, (name, value, final_env.get(name))
        entrypoints = [item["value"] for item in parsed.structure if item["instruction"] == "ENTRYPOINT"]
        assert json.loads(entrypoints[-1]) == ["/opt/processor/run", argument]
    finally:
        shutil.rmtree(work, ignore_errors=True)

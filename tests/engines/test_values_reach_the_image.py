"""What the scientist wrote is what the engine stores: labels and environment, checked on a real image."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from imagekit.config import Profile
from imagekit.pipeline import build_processor

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.slow]

TRICKY = "a \"quoted\" 'word', $HOME and ${USER}, back\\slash, 100% €漢"


def test_labels_and_env_reach_the_image_unchanged(
    tmp_path: Path, site_profile: Profile, docker_cleanup: list[str]
) -> None:
    name = f"ik-values-{uuid.uuid4().hex[:8]}"
    directory = tmp_path / name
    (directory / "conf").mkdir(parents=True)
    (directory / "conf" / "a.toml").write_text("a = 1\n")
    document = {
        "schema_version": 1,
        "processor": {"name": name, "version": "1.0.0", "description": TRICKY},
        "base": {"profile": "debian-12"},
        "app": {"copy": [{"from": "conf/", "to": "/opt/processor/conf/"}]},
        "runtime": {
            "env": {"LITERAL_TEXT": TRICKY, "PATH": "/opt/processor/bin:$PATH"},
            "entrypoint": ["/bin/echo", TRICKY],
        },
        "tests": [{"name": "echo", "run": ["/bin/echo", TRICKY], "expect_stdout": TRICKY}],
        "labels": {"org.example.note": TRICKY},
    }
    (directory / "processor.yaml").write_text(yaml.safe_dump(document, allow_unicode=True))
    image = build_processor(directory, site_profile, on_line=lambda _line: None).image
    docker_cleanup.extend(image.tags)
    config = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", image.id], capture_output=True, text=True, check=True
        ).stdout
    )[0]["Config"]
    assert config["Labels"]["org.opencontainers.image.description"] == TRICKY
    assert config["Labels"]["org.example.note"] == TRICKY
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["LITERAL_TEXT"].replace("$HOME", "").replace("${USER}", "") == TRICKY.replace(
        "$HOME", ""
    ).replace("${USER}", ""), "ENV expands $NAME like Docker does; every other character stays as written"
    assert env["PATH"].startswith("/opt/processor/bin:/usr/local/sbin:"), (
        "$PATH in env extends the base's PATH"
    )
    assert config["Entrypoint"] == ["/bin/echo", TRICKY]

"""Validation is the final word: what it accepts renders, and what it says survives into the Dockerfile.

Scientists write descriptions with quotes, environment values with `$` and backslashes, labels with
unicode, and sometimes fields render cannot use (a base without Python under dependencies.python,
build packages without a build, a PATH dropping the venv, a reserved or odd path, a wrong archive
checksum). Hypothesis writes such manifests and knows which fields it broke: validation must report
exactly those, and each manifest it accepts must render, parse back with a real Dockerfile parser
and carry the values unchanged (no injection, no lost characters).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from dockerfile_parse import DockerfileParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagekit.catalog import BaseRef, site_repository
from imagekit.config import SiteSettings
from imagekit.errors import ManifestError
from imagekit.manifest import load_manifest, validate_paths
from imagekit.render import render

from .render_parts import DIGEST, SOURCE

# What a scientist might type, with the characters that matter to shells, JSON and Dockerfiles.
# `$` and `\` are left to the real-engine test (tests/engines/test_values_reach_the_image.py): Docker
# expands and unescapes them, and the Python parser used here does not follow Docker there.
FREE_TEXT = st.text(alphabet="abcXYZ019 _-.,:;'\"`!?&|<>(){}[]*#%^~=+/@éü€漢\t", min_size=1, max_size=40)
ENV_NAME = st.from_regex(r"\A[A-Z][A-Z0-9_]{0,15}\Z").filter(lambda name: name != "PATH")
LABEL_KEY = st.from_regex(r"\Aorg\.example\.[a-z][a-z0-9.-]{0,15}\Z")


def _archive() -> bytes:
    """A vendor's tar.gz: render repacks it, so it must be one (validation reads only its sha256)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("tool-1.0/VERSION")
        info.size = len(b"tool 1.0\n")
        archive.addfile(info, io.BytesIO(b"tool 1.0\n"))
    return buffer.getvalue()


ARCHIVE = _archive()
SHA = hashlib.sha256(ARCHIVE).hexdigest()
ROCKY = site_repository("127.0.0.1:5000", "imagekit", "rocky-9")

Choice = tuple[Any, "str | None"]
"""A field's value, and the field validation must report for it (None: a good value)."""


def mostly(good: list[Any], bad: list[Choice]) -> st.SearchStrategy[Choice]:
    """A good value nine times in ten, so that both outcomes occur often in one run."""
    return st.integers(0, 9).flatmap(
        lambda n: st.sampled_from(bad) if n == 0 else st.sampled_from([(value, None) for value in good])
    )


BASES = mostly(
    [
        {"profile": "debian-12-python"},
        {"profile": "debian-12"},
        {"profile": "rocky-9"},
        {"profile": "micromamba"},
        {"image": f"{ROCKY}:9.5", "digest": DIGEST},
    ],
    [
        ({"image": f"{ROCKY}:9.5"}, "base.image"),
        ({"image": "registry.example.org/eo/base:1", "digest": DIGEST}, "base.image"),
    ],
)
APP_FROM = mostly(
    ["conf/", "./conf", "conf/a.toml"],
    [(".", "app.copy[0].from"), ("site/", "app.copy[0].from"), ("Dockerfile", "app.copy[0].from")],
)
COTS_SOURCE = mostly(
    ["cots/tool-1.0.tar.gz", "https://mirror.example.org/tool-1.0.tgz"],
    [("cots/tool 1.0.tgz", "cots[0].source"), ("https://user@mirror.example.org/t.tgz", "cots[0].source")],
)
COTS_SHA = mostly([SHA], [(hashlib.sha256(b"another").hexdigest(), "cots[0].sha256")])
COTS_PATH = mostly(["/opt/tool/bin:$PATH"], [("/opt/tool/bin", "cots[0].env.PATH")])
RUNTIME_PATH = mostly([None, "/opt/processor/bin:$PATH", "${PATH}:/opt/x"], [("/opt/x", "runtime.env.PATH")])


@st.composite
def manifests(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """A manifest document and the fields validation must refuse in it."""
    expected: set[str] = set()

    def pick(strategy: st.SearchStrategy[Choice]) -> Any:
        value, field = draw(strategy)
        expected.update([field] if field else [])
        return value

    argument = draw(FREE_TEXT)
    env = draw(st.dictionaries(ENV_NAME, FREE_TEXT, max_size=3))
    path = pick(RUNTIME_PATH)
    if path is not None:
        env["PATH"] = path
    base = pick(BASES)
    document: dict[str, Any] = {
        "schema_version": 1,
        "processor": {"name": "prop-demo", "version": "1.0.0", "description": draw(FREE_TEXT)},
        "base": base,
        "app": {"copy": [{"from": pick(APP_FROM), "to": "/opt/processor/conf/"}]},
        "runtime": {"env": env, "entrypoint": ["/opt/processor/run", argument]},
        "tests": [{"name": "echo", "run": ["echo", argument], "expect_stdout": argument}],
        "labels": draw(st.dictionaries(LABEL_KEY, FREE_TEXT, max_size=3)),
    }
    if draw(st.booleans()):
        document["dependencies"] = {"python": {"requirements": "requirements.lock"}}
        if base.get("profile") == "debian-12":
            expected.add("dependencies.python")
    build = draw(st.booleans())
    packages = draw(st.booleans()) if build else draw(st.integers(0, 9)) == 0
    if packages:
        document["system_packages"] = {"build": ["gcc"]}
    if build:
        document["build"] = {"commands": ["make"]}
    if packages and not build:
        expected.add("system_packages.build")
    if draw(st.booleans()):
        source = pick(COTS_SOURCE)
        sha, field = draw(COTS_SHA)
        if field and not source.startswith("https://"):  # an https archive is the engine's to check
            expected.add(field)
        cots = {"name": "tool", "version": "1.0", "source": source, "sha256": sha, "extract_to": "/opt/tool"}
        document["cots"] = [{**cots, "env": {"PATH": pick(COTS_PATH)}}]
    return document, expected


def base_of(document: dict[str, Any]) -> BaseRef:
    """The base a site would pin: the pinned image, or the profile's at a fixed digest."""
    base = document["base"]
    if "image" in base:
        return BaseRef(image=base["image"], digest=base["digest"])
    return BaseRef(image=site_repository("127.0.0.1:5000", "imagekit", base["profile"]), digest=DIGEST)


def make_processor(work: Path, document: dict[str, Any]) -> Path:
    directory = work / "prop-demo"
    (directory / "conf").mkdir(parents=True)
    (directory / "cots").mkdir()
    (directory / "conf" / "a.toml").write_text("a = 1\n")
    (directory / "requirements.lock").write_text("tabulate==0.9.0\n")
    (directory / "cots" / "tool-1.0.tar.gz").write_bytes(ARCHIVE)
    (directory / "cots" / "tool 1.0.tgz").write_bytes(ARCHIVE)
    # JSON is YAML 1.2, as imagekit reads it, with every string quoted: YAML dumpers leave `09`
    # unquoted (a string in YAML 1.1, a number in 1.2) and write flow scalars such as `?0` plainly.
    text = json.dumps(document, ensure_ascii=False, indent=1)
    (directory / "processor.yaml").write_text(text, encoding="utf-8")
    return directory


def check_rendered(work: Path, directory: Path, document: dict[str, Any]) -> None:
    """It renders, and the text survives a real Dockerfile parser."""
    manifest = load_manifest(directory)
    site = SiteSettings(ca_certificates=[])
    result = render(manifest, work / "out", base=base_of(document), site=site, source=SOURCE)
    parsed = DockerfileParser(path=str(result.context_dir / "Dockerfile"))
    description = document["processor"]["description"]
    one_line = " ".join(description.split())  # the description label is one line, by design
    assert parsed.labels.get("org.opencontainers.image.description", "") == one_line
    for key, value in document["labels"].items():
        assert parsed.labels[key] == value
    final_env = parsed.envs
    for name, value in document["runtime"]["env"].items():
        if name != "PATH":  # $PATH is Docker's to expand
            assert final_env[name] == value, (name, value, final_env.get(name))
    entrypoints = [item["value"] for item in parsed.structure if item["instruction"] == "ENTRYPOINT"]
    assert json.loads(entrypoints[-1]) == document["runtime"]["entrypoint"]


def test_validation_refuses_exactly_what_render_cannot_use_and_the_rest_renders() -> None:
    outcomes: list[bool] = []

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=manifests())
    def run(case: tuple[dict[str, Any], set[str]]) -> None:
        document, expected = case
        work = Path(tempfile.mkdtemp(prefix="imagekit-prop-"))
        try:
            directory = make_processor(work, document)
            ((_, error),) = validate_paths([directory], data_dir=work / "data")
            reported = {p.field for p in error.problems} if isinstance(error, ManifestError) else set()
            assert reported == expected, error.message if error else "accepted"
            if not expected:
                check_rendered(work, directory, document)
            outcomes.append(not expected)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    run()
    accepted, share = sum(outcomes), len(outcomes) // 10
    # A generator that only ever wrote good (or only bad) manifests would prove half of nothing.
    assert share <= accepted <= len(outcomes) - share, f"{accepted} of {len(outcomes)} accepted"

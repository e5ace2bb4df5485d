"""render_context is a pure function: what the templates will say, checked as data."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from imagekit.catalog import BaseRef
from imagekit.config import SiteSettings
from imagekit.errors import InputError, ManifestError
from imagekit.manifest import LoadedManifest, Processor, load_manifest
from imagekit.render import render_context

from .render_parts import DIGEST, EXAMPLES, SOURCE, base_for


def context_of(name: str, site: SiteSettings) -> Any:
    manifest = load_manifest(EXAMPLES[name])
    return render_context(manifest, base_for(manifest), site, SOURCE)


def variant(tmp_path: Path, name: str, change: dict[str, Any]) -> LoadedManifest:
    """A copy of an example with top-level sections of its manifest replaced."""
    directory = tmp_path / name
    directory.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(EXAMPLES[name], directory)
    data = yaml.safe_load((directory / "processor.yaml").read_text(encoding="utf-8"))
    (directory / "processor.yaml").write_text(yaml.safe_dump({**data, **change}), encoding="utf-8")
    return load_manifest(directory)


def test_olci_context_is_the_data_the_dockerfile_needs(site: SiteSettings) -> None:
    context = context_of("olci-l1-demo", site)
    assert context.base_image == f"127.0.0.1:5000/imagekit/base/debian-12-python@{DIGEST}"
    assert context.package_manager == "apt"
    assert (context.python_env, context.python_prefix) == ("venv", "/opt/venv")
    [cots] = context.cots
    assert cots.source == "cots/olci-lut.tar" and not cots.remote, "a local COTS is ADDed, repacked"
    assert (cots.stage, cots.archive, cots.staged) == ("", "", ""), "and needs no stage"
    assert (cots.extract_to, cots.strip_components) == ("/opt/olci-lut", 1)
    assert cots.env == {"OLCI_LUT_DIR": "/opt/olci-lut", "PATH": "/opt/olci-lut/bin:$PATH"}
    assert context.builder.packages == ["gcc", "libc6-dev", "make", "python3-setuptools", "python3-wheel"]
    assert context.builder.artifacts == ["/usr/local/bin/olci-calibrate", "/opt/olci/wheels"]
    assert [(c.source, c.dest) for c in context.app_copies] == [("conf/", "/opt/processor/conf/")]
    assert context.user.model_dump() == {
        "spec": "1000:1000",
        "name": "processor",
        "uid": "1000",
        "group": "",
        "gid": "1000",
        "create": True,
        "root": False,
    }
    assert [f.path for f in context.files] == [
        "c",
        "conf",
        "cots/olci-lut.tar",
        "python",
        "site/ca-1.crt",
    ]
    [repacked] = [f for f in context.files if f.repack]
    assert (repacked.path, repacked.source, repacked.field) == (
        "cots/olci-lut.tar",
        "cots/olci-lut-1.0.tar.gz",
        "cots[0].source",
    )
    assert repacked.repack.model_dump() == {
        "sha256": cots.sha256,
        "extract_to": "/opt/olci-lut",
        "strip_components": 1,
    }


def test_labels_record_provenance_and_executables(site: SiteSettings) -> None:
    manifest = load_manifest(EXAMPLES["olci-l1-demo"])
    labels = render_context(manifest, base_for(manifest), site, SOURCE).labels
    oci = "org.opencontainers.image."
    assert labels[oci + "revision"] == SOURCE.revision
    assert labels[oci + "created"] == SOURCE.created
    assert labels[oci + "source"] == SOURCE.source_url
    assert labels[oci + "title"] == "olci-l1-demo" and labels[oci + "version"] == "1.2.0"
    assert labels[oci + "licenses"] == "Apache-2.0"
    assert labels["imagekit.manifest.sha256"] == manifest.sha256
    executables = json.loads(labels["imagekit.executables"])
    assert executables[0]["name"] == "olci-l1"
    assert executables[0]["resources"] == {"cores": 1.0, "gpus": 0, "ram_gb": 2.0, "walltime_h": 0.5}
    assert " " not in labels["imagekit.executables"], "compact JSON"
    assert labels["eu.example.mission"] == "Sentinel-3"
    assert list(labels) == sorted(labels)


def test_the_same_inputs_give_the_same_context(site: SiteSettings) -> None:
    assert context_of("sst-cdr-demo", site) == context_of("sst-cdr-demo", site)


def test_site_trust_and_mirrors_follow_the_profile(site: SiteSettings) -> None:
    debian = context_of("sst-cdr-demo", site)
    assert debian.trust.files == ["site/ca-1.crt"]
    assert debian.trust.installed == ["/usr/local/share/ca-certificates/imagekit/ca-1.crt"]
    assert debian.trust.update == "update-ca-certificates"
    assert debian.mirrors.apt == "http://mirror.example.org/debian"
    assert debian.mirrors.apt_file == "/etc/apt/sources.list"
    assert debian.mirrors.apt_lines == [
        "deb http://mirror.example.org/debian bookworm main",
        "deb http://mirror.example.org/debian bookworm-updates main",
        "deb http://mirror.example.org/debian-security bookworm-security main",
    ]
    assert debian.mirrors.apt_removed == []
    conda = context_of("conda-demo", site)
    assert conda.trust.update == "", "the micromamba image has no update-ca-certificates: append instead"
    assert conda.base_user == "mambauser"
    assert conda.mirrors.apt_removed == ["/etc/apt/sources.list.d/debian.sources"]
    assert (conda.python_env, conda.python_prefix) == ("micromamba", "/opt/conda")
    el = context_of("el9-demo", site)
    assert el.trust.anchors == "/etc/pki/ca-trust/source/anchors"
    assert (el.mirrors.apt_file, el.mirrors.apt_lines) == ("", [])
    unset = context_of("sst-cdr-demo", SiteSettings(ca_certificates=[]))
    assert unset.mirrors.apt_lines == [], "without site.apt_mirror the base keeps its own sources"


def test_no_site_ca_means_no_trust_layer() -> None:
    assert context_of("sst-cdr-demo", SiteSettings(ca_certificates=[])).trust is None


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("apt_mirror", "http://user:secret@mirror.example.org/debian"),
        ("pip_index_url", "https://token@pypi.example.org/simple"),
        ("apt_mirror", "ftp://mirror.example.org/debian"),
        ("apt_mirror", "http://mirror.example.org/debian|x"),
    ],
)
def test_mirrors_with_credentials_or_odd_syntax_are_refused(setting: str, value: str) -> None:
    with pytest.raises(InputError, match=f"site.{setting}"):
        context_of("sst-cdr-demo", SiteSettings(ca_certificates=[], **{setting: value}))


def test_an_unpinned_base_is_refused(site: SiteSettings) -> None:
    manifest = load_manifest(EXAMPLES["sst-cdr-demo"])
    with pytest.raises(InputError, match=r"base: the base must be pinned by digest"):
        render_context(manifest, BaseRef(image="debian", digest="latest"), site, SOURCE)


VALUE_RULES = [
    ({"build": {"commands": ["make # all of it"]}}, "build.commands[0]"),
    ({"build": {"commands": ["make\nmake install"]}}, "build.commands[0]"),
    ({"app": {"install": "pip install . # then"}}, "app.install"),
    ({"labels": {"imagekit.executables": "[]"}}, "labels.imagekit.executables"),
    ({"labels": {"bad key": "x"}}, "labels.bad key"),
    ({"runtime": {"env": {"MULTI": "one\ntwo"}}}, "runtime.env.MULTI"),
    ({"runtime": {"env": {"PATH": "/opt/processor/bin"}}}, "runtime.env.PATH"),
    ({"app": {"copy": [{"from": ".", "to": "/opt/processor/"}]}}, "app.copy[0].from"),
    ({"app": {"copy": [{"from": "site/", "to": "/opt/processor/"}]}}, "app.copy[0].from"),
    ({"base": {"profile": "debian-12"}}, "dependencies.python"),
    ({"system_packages": {"build": ["gcc"]}}, "system_packages.build"),
]


@pytest.mark.parametrize(("change", "field"), VALUE_RULES)
def test_value_rules_are_reported_by_validation_and_still_guard_rendering(
    tmp_path: Path, site: SiteSettings, change: dict[str, Any], field: str
) -> None:
    """`validate` names the line; a model built in code, never validated, still cannot render."""
    with pytest.raises(ManifestError) as refused:
        variant(tmp_path, "sst-cdr-demo", change)
    dotted = field.replace("[0]", ".0").replace("labels.bad key", "labels")
    assert any(p.field.replace("[0]", ".0").startswith(dotted) for p in refused.value.problems), (
        refused.value.message
    )
    original = load_manifest(EXAMPLES["sst-cdr-demo"])
    data = original.processor.model_dump(by_alias=True, exclude_none=True)
    section, value = next(iter(change.items()))
    data[section] = {**data.get(section, {}), **value} if isinstance(value, dict) else value
    unvalidated = dataclasses.replace(original, processor=Processor.model_validate(data))
    with pytest.raises(InputError) as raised:
        render_context(unvalidated, base_for(unvalidated), site, SOURCE)
    assert f"processor.yaml: {field}: " in raised.value.message


def test_a_site_image_base_uses_the_catalog_profile_of_that_image(tmp_path: Path, site: SiteSettings) -> None:
    image = "registry.example.org/eo/base/rocky-9:9.5"
    manifest = variant(tmp_path, "sst-cdr-demo", {"base": {"image": image, "digest": DIGEST}})
    context = render_context(manifest, BaseRef(image=image.split(":9")[0], digest=DIGEST), site, SOURCE)
    assert (context.profile, context.package_manager) == ("rocky-9", "dnf")


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("1000", {"name": "processor", "uid": "1000", "gid": "", "group": ""}),
        ("app", {"name": "app", "uid": "", "gid": "", "group": ""}),
        ("2000:staff", {"name": "processor", "uid": "2000", "gid": "", "group": "staff"}),
    ],
)
def test_runtime_user_forms(tmp_path: Path, site: SiteSettings, user: str, expected: dict[str, str]) -> None:
    manifest = variant(tmp_path, "sst-cdr-demo", {"runtime": {"user": user}})
    context = render_context(manifest, base_for(manifest), site, SOURCE)
    assert {key: getattr(context.user, key) for key in expected} == expected
    assert context.user.create and not context.user.root


def test_root_needs_allow_root_and_is_then_not_created(tmp_path: Path, site: SiteSettings) -> None:
    runtime = {"user": "0:0", "allow_root": True, "root_reason": "mounts a FUSE file system"}
    manifest = variant(tmp_path, "sst-cdr-demo", {"runtime": runtime})
    user = render_context(manifest, base_for(manifest), site, SOURCE).user
    assert user.root and not user.create


def test_free_text_cannot_start_a_new_dockerfile_line(tmp_path: Path, site: SiteSettings) -> None:
    data = yaml.safe_load((EXAMPLES["olci-l1-demo"] / "processor.yaml").read_text(encoding="utf-8"))
    cots = [{**data["cots"][0], "license": "MIT\nRUN curl evil", "version": "1.0\nUSER 0"}]
    info = {**data["processor"], "description": "SST\nRUN rm -rf /", "maintainers": ["A\nUSER 0"]}
    manifest = variant(tmp_path, "olci-l1-demo", {"cots": cots, "processor": info})
    context = render_context(manifest, base_for(manifest), site, SOURCE)
    assert (context.cots[0].license, context.cots[0].version) == ("MIT RUN curl evil", "1.0 USER 0")
    assert context.labels["org.opencontainers.image.description"] == "SST RUN rm -rf /"
    assert context.labels["org.opencontainers.image.authors"] == "A USER 0"
    env = {**data["cots"][0]["env"], "LUT": "a\nRUN b"}
    with pytest.raises(ManifestError, match=r":25:10: cots\[0\]\.env\.LUT: must be one line"):
        variant(tmp_path / "env", "olci-l1-demo", {"cots": [{**data["cots"][0], "env": env}]})


def test_a_remote_cots_keeps_its_stage_and_adds_no_context_file(tmp_path: Path, site: SiteSettings) -> None:
    data = yaml.safe_load((EXAMPLES["olci-l1-demo"] / "processor.yaml").read_text(encoding="utf-8"))
    url = "https://mirror.example.org/vendor/olci-lut-1.0.tar.gz"
    manifest = variant(tmp_path, "olci-l1-demo", {"cots": [{**data["cots"][0], "source": url}]})
    context = render_context(manifest, base_for(manifest), site, SOURCE)
    [cots] = context.cots
    assert (cots.source, cots.remote, cots.stage) == (url, True, "cots-olci-lut"), "the engine downloads it"
    assert (cots.archive, cots.staged) == ("/tmp/cots/olci-lut-1.0.tar.gz", "/out/opt/olci-lut")
    assert not [f for f in context.files if f.path.startswith("cots")]


def test_no_processor_file_may_take_the_place_of_a_repacked_archive(
    tmp_path: Path, site: SiteSettings
) -> None:
    data = yaml.safe_load((EXAMPLES["olci-l1-demo"] / "processor.yaml").read_text(encoding="utf-8"))
    app = {"copy": [*data["app"]["copy"], {"from": "cots/", "to": "/opt/processor/cots/"}]}
    manifest = variant(tmp_path, "olci-l1-demo", {"app": app})
    with pytest.raises(InputError, match=r"app\.copy\[1\]\.from: 'cots' would take the place of cots/olci"):
        render_context(manifest, base_for(manifest), site, SOURCE)

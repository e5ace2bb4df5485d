"""Each rule of processor.yaml v1: a manifest breaking it, reported at the exact line:col, and one passing.

A case edits the known-good manifest (conftest.GOOD); « in the edit marks where the problem must be
reported, so every position asserted here is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from manifest_cases import CATALOG_IMAGE, DIGEST, GOOD, SHA, SITE_BASES, edit, locate

from imagekit.catalog import load_catalog
from imagekit.errors import Problem
from imagekit.manifest import load_manifest


class Case(NamedTuple):
    id: str
    old: str
    new: str
    field: str
    message: str


TESTS_BLOCK = 'tests:\n  - name: version\n    run: ["olci-l1", "--version"]\n    expect_stdout: "1.4.0"\n'
COTS_HEAD = '  - name: vendor-tool\n    version: "2.11.0"\n    source: cots/vendor-tool-2.11.0.tar.gz\n'
RESOURCES = "    resources: {cores: 2, ram_gb: 4, walltime_h: 2, gpus: 0}\n"
USER = '  user: "1000:1000"\n'

FAILING = [
    # unknown keys, everywhere, with a hint
    Case("unknown-top-key", "labels: {}", "labels: {}\n«labls: {}", "labls", "did you mean 'labels'?"),
    Case(
        "unknown-nested-key",
        "  licenses: [",
        "  «licences: [",
        "processor.licences",
        "did you mean 'licenses'?",
    ),
    Case(
        "unknown-key-in-list-item",
        "    strip_components: 1",
        "    «strip_component: 1",
        "cots[0].strip_component",
        "did you mean 'strip_components'?",
    ),
    Case("unknown-key-in-flow-map", "{cores: 2,", "{«core: 2,", "executables[0].resources.core", "'cores'?"),
    Case(
        "unknown-key-no-match",
        "  cvmfs: true",
        "  cvmfs: true\n  «zenodo: 1",
        "publish.zenodo",
        "known keys: cvmfs",
    ),
    # required fields, reported at the key of the mapping that lacks them
    Case(
        "missing-field",
        "processor:\n  name: s3-olci-l1\n  version: 1.4.0\n",
        "«processor:\n  name: s3-olci-l1\n",
        "processor.version",
        "required",
    ),
    Case("missing-schema-version", "schema_version: 1\n", "«", "schema_version", "`schema_version: 1`"),
    Case(
        "missing-sha256",
        COTS_HEAD + f"    sha256: {SHA}\n",
        COTS_HEAD.replace("- n", "- «n"),
        "cots[0].sha256",
        "required",
    ),
    # schema_version
    Case(
        "schema-version-2",
        "schema_version: 1",
        "schema_version: «2",
        "schema_version",
        "reads schema_version 1",
    ),
    Case("schema-version-text", "schema_version: 1", 'schema_version: «"1"', "schema_version", "got '1'"),
    # processor.name
    Case(
        "name-uppercase",
        "name: s3-olci-l1",
        "name: «S3-OLCI-L1",
        "processor.name",
        "expected a lowercase name",
    ),
    Case(
        "name-too-long", "name: s3-olci-l1", "name: «" + "a" * 64, "processor.name", "at most 63 characters"
    ),
    Case("name-leading-dash", "name: s3-olci-l1", "name: «-olci", "processor.name", "starting with a letter"),
    # processor.version
    Case(
        "version-latest",
        "  version: 1.4.0",
        "  version: «latest",
        "processor.version",
        "'latest' is not a version",
    ),
    Case(
        "version-empty",
        "  version: 1.4.0",
        '  version: «""',
        "processor.version",
        "a release version such as",
    ),
    Case("version-v-prefix", "  version: 1.4.0", "  version: «v1.4.0", "processor.version", "got 'v1.4.0'"),
    Case(
        "version-number", "  version: 1.4.0", "  version: «2024.03", "processor.version", "put it in quotes"
    ),
    # cots
    Case(
        "sha256-uppercase",
        f"sha256: {SHA}",
        f"sha256: «{SHA.upper()}",
        "cots[0].sha256",
        "64 lowercase hex digits",
    ),
    Case(
        "sha256-short", f"sha256: {SHA}", f"sha256: «{SHA[:63]}", "cots[0].sha256", "64 lowercase hex digits"
    ),
    Case("cots-version-empty", 'version: "2.11.0"', 'version: «""', "cots[0].version", "must not be empty"),
    Case(
        "strip-negative",
        "strip_components: 1",
        "strip_components: «-1",
        "cots[0].strip_components",
        "0 or more",
    ),
    # base
    Case(
        "base-both",
        "base:\n  profile: debian-12-python\n",
        f"«base:\n  profile: debian-12-python\n  image: {CATALOG_IMAGE}:9.5\n",
        "base",
        "either profile or image, not both",
    ),
    Case(
        "base-neither",
        "base:\n  profile: debian-12-python\n",
        "«base: {}\n",
        "base",
        "give a profile (one of: debian-12,",
    ),
    Case(
        "base-unknown-profile",
        "profile: debian-12-python",
        "profile: «debian-12-pyhton",
        "base.profile",
        "did you mean 'debian-12-python'?",
    ),
    Case(
        "digest-format",
        "  profile: debian-12-python\n",
        f"  image: {CATALOG_IMAGE}:9.5\n  digest: «sha256:abc\n",
        "base.digest",
        "expected sha256:<64 hex digits>, got 'sha256:abc'",
    ),
    Case(
        "digest-without-image",
        "  profile: debian-12-python\n",
        f"  profile: debian-12-python\n  digest: «{DIGEST}\n",
        "base.digest",
        "pins base.image",
    ),
    Case(
        "base-image-not-in-catalog",
        "  profile: debian-12-python\n",
        f"  image: «registry.example.org:5000/eo/base\n  digest: {DIGEST}\n",
        "base.image",
        "is no catalog image, so imagekit does not know how to install packages on it",
    ),
    # PATH keeps the image's own: the venv of dependencies.python and the system's directories
    Case(
        "runtime-path-replaced",
        'env: {OMP_NUM_THREADS: "1"}',
        'env: {OMP_NUM_THREADS: "1", PATH: «"/opt/processor/bin"}',
        "runtime.env.PATH",
        "replaces the image's PATH, so the commands of dependencies.python (/opt/venv/bin)",
    ),
    Case(
        "cots-path-replaced",
        'env: {PATH: "/opt/cots/vendor-tool/bin:$PATH"}',
        'env: {PATH: «"/opt/cots/vendor-tool/bin:$PATHS"}',
        "cots[0].env.PATH",
        "keep them with '/opt/cots/vendor-tool/bin:$PATHS:$PATH'",
    ),
    Case(
        "image-with-digest",
        "  profile: debian-12-python\n",
        f"  image: «{CATALOG_IMAGE}@{DIGEST}\n",
        "base.image",
        "put a digest in base.digest",
    ),
    # environment variable names
    Case(
        "env-name-lowercase",
        "env: {OMP_NUM_THREADS",
        "env: {«omp_num_threads",
        "runtime.env.omp_num_threads",
        "UPPER_SNAKE_CASE",
    ),
    Case("cots-env-name", "env: {PATH:", "env: {«Path:", "cots[0].env.Path", "UPPER_SNAKE_CASE"),
    Case(
        "env-value-number",
        'OMP_NUM_THREADS: "1"',
        "OMP_NUM_THREADS: «1",
        "runtime.env.OMP_NUM_THREADS",
        "put it in quotes",
    ),
    # unique names
    Case(
        "duplicate-executable",
        RESOURCES,
        RESOURCES + "  - name: «olci-l1\n    command: [x]\n",
        "executables[1].name",
        "already the name of executables[0]",
    ),
    Case(
        "duplicate-test",
        '    expect_stdout: "1.4.0"\n',
        '    expect_stdout: "1.4.0"\n  - name: «version\n    run: [x]\n',
        "tests[1].name",
        "already the name of tests[0]",
    ),
    Case("executable-name", "name: olci-l1", "name: «olci l1", "executables[0].name", "such as olci-l1"),
    # resources
    Case("cores-zero", "{cores: 2,", "{cores: «0,", "executables[0].resources.cores", "greater than 0"),
    Case("ram-negative", "ram_gb: 4", "ram_gb: «-1", "executables[0].resources.ram_gb", "greater than 0"),
    Case(
        "walltime-infinite",
        "walltime_h: 2",
        "walltime_h: «.inf",
        "executables[0].resources.walltime_h",
        "finite",
    ),
    Case("gpus-negative", "gpus: 0}", "gpus: «-1}", "executables[0].resources.gpus", "0 or more"),
    Case("gpus-fraction", "gpus: 0}", "gpus: «0.5}", "executables[0].resources.gpus", "whole number"),
    Case("command-empty", 'command: ["olci-l1"]', "command: «[]", "executables[0].command", "at least one"),
    # tests
    Case("no-tests", TESTS_BLOCK, "tests: «[]\n", "tests", "at least one entry"),
    Case("test-run-empty", 'run: ["olci-l1", "--version"]', "run: «[]", "tests[0].run", "at least one entry"),
    Case(
        "expect-exit-range",
        '    expect_stdout: "1.4.0"\n',
        '    expect_stdout: "1.4.0"\n    expect_exit: «300\n',
        "tests[0].expect_exit",
        "255 or less",
    ),
    # absolute paths in the image
    Case(
        "extract-to-relative", "extract_to: /opt", "extract_to: «opt", "cots[0].extract_to", "absolute path"
    ),
    Case("copy-to-relative", "to: /src/}", "to: «src/}", "build.copy[0].to", "absolute path"),
    Case("build-workdir-relative", "workdir: /src", "workdir: «src", "build.workdir", "absolute path"),
    Case(
        "runtime-workdir-relative",
        "workdir: /opt/processor",
        "workdir: «./processor",
        "runtime.workdir",
        "absolute",
    ),
    Case("artifact-relative", "artifacts: [/opt", "artifacts: [«opt", "build.artifacts[0]", "absolute path"),
    Case(
        "artifact-with-space",
        "artifacts: [/opt/processor",
        'artifacts: [«"/opt/my processor"',
        "build.artifacts[0]",
        "without spaces",
    ),
    # runtime.user and root
    Case("user-form", USER, '  user: «"1000:"\n', "runtime.user", "uid[:gid]"),
    Case(
        "user-root",
        USER,
        "  user: «root\n",
        "runtime.user",
        "set allow_root: true and say why in root_reason",
    ),
    Case("user-uid-0", USER, '  user: «"0:0"\n', "runtime.user", "runs as root"),
    Case(
        "root-without-reason",
        USER,
        "  user: root\n  allow_root: «true\n",
        "runtime.allow_root",
        "needs a root_reason",
    ),
    Case(
        "root-blank-reason",
        USER,
        '  user: root\n  allow_root: «true\n  root_reason: "  "\n',
        "runtime.allow_root",
        "needs a root_reason",
    ),
    # labels
    Case(
        "generated-label",
        "labels: {}",
        "labels:\n  «org.opencontainers.image.title: x",
        "labels.org.opencontainers.image.title",
        "generated by imagekit",
    ),
    # formats of other fields
    Case(
        "package-name",
        "build: [gcc, make]",
        'build: [gcc, «"make; rm -rf /"]',
        "system_packages.build[1]",
        "package name",
    ),
    Case(
        "license-id",
        "licenses: [Apache-2.0]",
        "licenses: [«Apache 2.0]",
        "processor.licenses[0]",
        "SPDX license id",
    ),
    Case("source-url", "source_url: https:", "source_url: «ftp:", "processor.source_url", "http(s) URL"),
    # wrong types
    Case(
        "mapping-expected",
        "python: {requirements: requirements.lock, require_hashes: true}",
        "python: «[requirements.lock]",
        "dependencies.python",
        "expected a mapping",
    ),
    Case("list-expected", "build: [gcc, make]", "build: «gcc", "system_packages.build", "expected a list"),
    Case("bool-expected", "cvmfs: true", "cvmfs: «yes", "publish.cvmfs", "expected true or false, got 'yes'"),
    Case(
        "bool-not-number",
        "require_hashes: true",
        "require_hashes: «1",
        "dependencies.python.require_hashes",
        "true or false",
    ),
    Case(
        "text-not-null",
        'description: "OLCI level-1 processor"',
        "description: «~",
        "processor.description",
        "got nothing",
    ),
    Case(
        "text-not-date",
        'description: "OLCI level-1 processor"',
        "description: «2024-03-01",
        "processor.description",
        "the date",
    ),
    Case("key-not-text", "labels: {}", "labels: {}\n«1: x", "[1]", "keys must be text"),
    Case(
        "yaml-tag",
        'description: "OLCI level-1 processor"',
        "description: «!shell echo",
        "processor.description",
        "tags",
    ),
]


@pytest.mark.parametrize("case", FAILING, ids=[case.id for case in FAILING])
def test_rule_reports_the_exact_position(case: Case, problems: Callable[..., list[Problem]]) -> None:
    line, column, text = locate(edit(GOOD, case.old, case.new))
    found = problems(text)
    assert [(p.line, p.column, p.field) for p in found] == [(line, column, case.field)], found
    assert case.message in found[0].message


PASSING = [
    ("version-pre-release", "  version: 1.4.0", "  version: 1.4.0rc1"),
    ("version-calendar", "  version: 1.4.0", '  version: "2024.03"'),
    ("version-post", "  version: 1.4.0", "  version: 1.4.0.post1"),
    ("name-one-char", "name: s3-olci-l1", "name: a"),
    ("name-63-chars", "name: s3-olci-l1", "name: " + "a" * 63),
    ("name-dots-underscores", "name: s3-olci-l1", "name: s3.olci_l1"),
    (
        "base-image-digest",
        "  profile: debian-12-python\n",
        f"  image: {CATALOG_IMAGE}:9.5\n  digest: {DIGEST}\n",
    ),
    (
        "base-image-other-tag",
        "  profile: debian-12-python\n",
        f"  image: {CATALOG_IMAGE}:9\n  digest: {DIGEST}\n",
    ),
    (
        "cots-https",
        "source: cots/vendor-tool-2.11.0.tar.gz",
        "source: https://mirror.example.org/vendor-tool.tgz",
    ),
    ("cots-quoted-version-tag", 'version: "2.11.0"', "version: !!str 2.10"),
    ("root-with-reason", USER, '  user: root\n  allow_root: true\n  root_reason: "binds port 80"\n'),
    ("user-name", USER, "  user: app\n"),
    ("user-uid-only", USER, '  user: "1000"\n'),
    ("cores-fraction", "{cores: 2,", "{cores: 0.5,"),
    ("gpus", "gpus: 0}", "gpus: 1}"),
    ("env-digits", 'OMP_NUM_THREADS: "1"', 'OMP_NUM_THREADS: "1", GDAL_CACHE_2: "64"'),
    ("custom-label", "labels: {}", "labels: {org.example.team: eo}"),
    ("no-optional-sections", "publish:\n  cvmfs: true\nlabels: {}\n", ""),
    ("license-ref", "licenses: [Apache-2.0]", "licenses: [Apache-2.0, LicenseRef-esa-tool]"),
    ("pinned-package", "runtime: [libgomp1]", "runtime: [libgomp1=12.2.0-14]"),
    ("path-braces", "vendor-tool/bin:$PATH", "vendor-tool/bin:${PATH}"),
    ("path-appended", '"/opt/cots/vendor-tool/bin:$PATH"', '"$PATH:/opt/cots/vendor-tool/bin"'),
    ("build-without-packages", "  build: [gcc, make]\n", ""),
]


@pytest.mark.parametrize(("old", "new"), [c[1:] for c in PASSING], ids=[c[0] for c in PASSING])
def test_rule_accepts(old: str, new: str, write: Callable[[str], Path]) -> None:
    load_manifest(write(edit(GOOD, old, new)))


@pytest.mark.parametrize("profile", sorted(load_catalog().profiles))
def test_every_catalog_profile_is_a_valid_base(profile: str, write: Callable[[str], Path]) -> None:
    text = edit(GOOD, "profile: debian-12-python\n", f"profile: {profile}\n")
    entry = load_catalog().profiles[profile]
    if not (entry.python or entry.conda):
        text = edit(
            text, "dependencies:\n  python: {requirements: requirements.lock, require_hashes: true}\n", ""
        )
    manifest = load_manifest(write(text))
    assert manifest.processor.base.profile == profile


def test_minimal_manifest(write: Callable[[str], Path]) -> None:
    text = (
        "schema_version: 1\nprocessor: {name: p, version: 0.1.0}\n"
        "base: {profile: debian-12}\ntests: [{name: t, run: [/bin/true]}]\n"
    )
    processor = load_manifest(write(text)).processor
    assert processor.runtime.user == "1000:1000"
    assert processor.tests[0].expect_exit == 0


def test_missing_top_level_key_is_reported_at_the_start(problems: Callable[..., list[Problem]]) -> None:
    (only,) = problems(edit(GOOD, TESTS_BLOCK, ""))
    assert (only.line, only.column, only.field, only.message) == (1, 1, "tests", "required, but missing")


def test_a_site_image_is_always_pinned_and_a_release_says_so(
    problems: Callable[..., list[Problem]], write: Callable[[str], Path]
) -> None:
    """Render writes FROM image@digest, so validation refuses an unpinned image, release or not."""
    unpinned = edit(GOOD, "  profile: debian-12-python\n", f"  image: «{CATALOG_IMAGE}:9.5\n")
    line, column, text = locate(unpinned)
    (found,) = problems(text)
    assert (found.line, found.column, found.field) == (line, column, "base.image")
    assert "FROM is always pinned by digest: add base.digest" in found.message
    (found,) = problems(text, release=True)
    assert (found.line, found.column, found.field) == (line, column, "base.image")
    assert "a release needs the image pinned" in found.message
    pinned = edit(
        GOOD, "  profile: debian-12-python\n", f"  image: {CATALOG_IMAGE}:9.5\n  digest: {DIGEST}\n"
    )
    load_manifest(write(pinned), release=True)
    load_manifest(write(GOOD), release=True)


def test_base_image_is_the_sites_copy_of_a_catalog_base(
    problems: Callable[..., list[Problem]], write: Callable[[str], Path]
) -> None:
    """Knowing the site (validate, render), a base.image is one of its `<registry>/<project>/base/*`."""

    def image(value: str) -> str:
        return edit(GOOD, "  profile: debian-12-python\n", f"  image: {value}\n  digest: {DIGEST}\n")

    for accepted in (f"{CATALOG_IMAGE}:9.5", f"{SITE_BASES}/debian-12-python", f"{SITE_BASES}/micromamba:2"):
        load_manifest(write(image(accepted)), bases=SITE_BASES)
    other_site = image("«registry.example.org/other/base/rocky-9:9.5")
    line, column, text = locate(other_site)
    (found,) = problems(text, bases=SITE_BASES)
    assert (found.line, found.column, found.field) == (line, column, "base.image")
    assert "is no catalog image" in found.message
    assert f"the site's copy of one: {SITE_BASES}/<profile>" in found.message
    # read without the site (a smoke test, CI generation): any `<...>/base/<profile>` names the profile
    load_manifest(write(other_site.replace("«", "")))
    (found,) = problems(image("registry.example.org/eo/rocky-9"))
    assert "<registry>/<project>/base/<profile>" in found.message


def test_python_dependencies_follow_the_profile_of_the_site_image(
    problems: Callable[..., list[Problem]],
) -> None:
    text = edit(
        GOOD, "  profile: debian-12-python\n", f"  image: {SITE_BASES}/debian-12\n  digest: {DIGEST}\n"
    )
    (found,) = problems(text, bases=SITE_BASES)
    assert found.field == "dependencies.python"
    assert "base profile 'debian-12' has no Python" in found.message


def test_schema_version_other_than_1_is_one_problem(problems: Callable[..., list[Problem]]) -> None:
    text = edit(GOOD, "schema_version: 1", "schema_version: 2") + "anything: goes\n"
    (only,) = problems(text)
    assert only.message == "got the number 2; this imagekit reads schema_version 1"


def test_unknown_key_does_not_also_report_the_missing_key_it_stands_for(
    problems: Callable[..., list[Problem]],
) -> None:
    (only,) = problems(edit(GOOD, "  version: 1.4.0", "  verison: 1.4.0"))
    assert (only.line, only.column, only.field) == (4, 3, "processor.verison")
    assert only.message == "unknown key 'verison' (did you mean 'version'?)"


BROKEN = """\
schema_version: 1
procesor:
  name: S3
processor:
  name: Bad Name
  version: latest
base:
  profile: debian12
cots:
  - name: tool
    version: 2.1
    source: ../x.tgz
    sha256: ABC
    extract_to: opt/x
runtime:
  user: root
  env: {A: 1}
executables:
  - name: a
    command: [a]
    resources: {cores: 0, gpus: -1}
  - name: a
    command: [x]
tests: []
"""


def test_every_problem_is_reported_at_once_in_file_order(problems: Callable[..., list[Problem]]) -> None:
    found = problems(BROKEN)
    assert [(p.line, p.column, p.field) for p in found] == [
        (2, 1, "procesor"),
        (5, 9, "processor.name"),
        (6, 12, "processor.version"),
        (8, 12, "base.profile"),
        (11, 14, "cots[0].version"),
        (12, 13, "cots[0].source"),
        (13, 13, "cots[0].sha256"),
        (14, 17, "cots[0].extract_to"),
        (16, 9, "runtime.user"),
        (17, 12, "runtime.env.A"),
        (21, 24, "executables[0].resources.cores"),
        (21, 33, "executables[0].resources.gpus"),
        (22, 11, "executables[1].name"),
        (24, 8, "tests"),
    ]


def test_problems_read_file_line_col_field_message(
    problems: Callable[..., list[Problem]], proc_dir: Path
) -> None:
    from imagekit.errors import ManifestError

    found = problems(edit(GOOD, "  version: 1.4.0", "  version: latest"))
    text = str(found[0])
    assert text.startswith(
        f"{proc_dir / 'processor.yaml'}:4:12: processor.version: expected a release version"
    )
    assert ManifestError(found).lines()[-1] == (
        f"{proc_dir / 'processor.yaml'}:4:12: 1 problem in this manifest (first: processor.version)"
    )


def test_python_dependencies_need_a_base_with_python(problems: Callable[..., list[Problem]]) -> None:
    """Render refuses it, so validation does, at the dependencies.python key."""
    text = edit(GOOD, "profile: debian-12-python\n", "profile: debian-12\n")
    line, column, text = locate(edit(text, "  python: {requirements", "  «python: {requirements"))
    (found,) = problems(text)
    assert (found.line, found.column, found.field) == (line, column, "dependencies.python")
    assert found.message == (
        "base profile 'debian-12' has no Python; use one that has, such as debian-12-python"
    )


def test_build_packages_need_a_build_section(problems: Callable[..., list[Problem]]) -> None:
    build = GOOD[GOOD.index("build:\n  workdir") : GOOD.index("app:\n")]
    line, column, text = locate(edit(edit(GOOD, build, ""), "  build: [gcc", "  «build: [gcc"))
    (found,) = problems(text)
    assert (found.line, found.column, found.field) == (line, column, "system_packages.build")
    assert found.message == "build packages need a `build` section to use them"


def test_every_render_rule_is_reported_at_once(problems: Callable[..., list[Problem]]) -> None:
    text = edit(GOOD, "profile: debian-12-python\n", "profile: debian-12\n")
    text = edit(text, GOOD[GOOD.index("build:\n  workdir") : GOOD.index("app:\n")], "")
    text = edit(text, "{from: conf/,", "{from: site/,")
    text = edit(text, 'OMP_NUM_THREADS: "1"', 'PATH: "/opt/processor/bin"')
    fields = [p.field for p in problems(text)]
    assert fields == ["system_packages.build", "dependencies.python", "app.copy[1].from", "runtime.env.PATH"]

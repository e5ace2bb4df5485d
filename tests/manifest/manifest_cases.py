"""The known-good processor.yaml (the v1 example of the issue) and helpers to edit it into cases."""

from __future__ import annotations

import hashlib
import io
import tarfile


def _archive() -> str:
    """A vendor's tar holding `vendor-tool-2.11.0/bin/tool` (render repacks the archive, so it must
    be one); its ustar headers are ASCII, so it is written as text like the other files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("vendor-tool-2.11.0/bin/tool")
        info.size, info.mode = 4, 0o755
        archive.addfile(info, io.BytesIO(b"test"))
    return buffer.getvalue().decode("ascii")


ARCHIVE = _archive()
SHA = hashlib.sha256(ARCHIVE.encode("ascii")).hexdigest()
"""sha256 of the COTS archive above (the scientist guide's example names it too)."""
DIGEST = f"sha256:{SHA}"
SITE_BASES = "registry.example.org/eo/base"
"""The site's base repositories, `<registry>/<project>/base` (catalog.site_bases)."""
CATALOG_IMAGE = f"{SITE_BASES}/rocky-9"
"""A site image render knows how to install packages on: the site's copy of the rocky-9 profile."""

GOOD = f"""\
schema_version: 1
processor:
  name: s3-olci-l1
  version: 1.4.0
  description: "OLCI level-1 processor"
  maintainers: ["EO processing team <eo@example.org>"]
  licenses: [Apache-2.0]
  source_url: https://git.example.org/eo/s3-olci-l1
base:
  profile: debian-12-python
system_packages:
  build: [gcc, make]
  runtime: [libgomp1]
cots:
  - name: vendor-tool
    version: "2.11.0"
    source: cots/vendor-tool-2.11.0.tar.gz
    sha256: {SHA}
    extract_to: /opt/cots/vendor-tool
    strip_components: 1
    env: {{PATH: "/opt/cots/vendor-tool/bin:$PATH"}}
    license: proprietary
dependencies:
  python: {{requirements: requirements.lock, require_hashes: true}}
build:
  workdir: /src
  copy: [{{from: src/, to: /src/}}]
  commands: ["make -C /src", "make -C /src install PREFIX=/opt/processor"]
  artifacts: [/opt/processor]
app:
  copy: [{{from: python/, to: /opt/processor/python/}}, {{from: conf/, to: /opt/processor/conf/}}]
  install: "pip install --no-deps /opt/processor/python"
runtime:
  workdir: /opt/processor
  user: "1000:1000"
  env: {{OMP_NUM_THREADS: "1"}}
  entrypoint: ["olci-l1"]
executables:
  - name: olci-l1
    command: ["olci-l1"]
    inputs: [l0_granule, aux_dir]
    outputs: [l1_product]
    resources: {{cores: 2, ram_gb: 4, walltime_h: 2, gpus: 0}}
tests:
  - name: version
    run: ["olci-l1", "--version"]
    expect_stdout: "1.4.0"
publish:
  cvmfs: true
labels: {{}}
"""

PROCESSOR_FILES = {
    "cots/vendor-tool-2.11.0.tar.gz": ARCHIVE,
    "requirements.lock": "numpy==1.26.4 --hash=sha256:" + SHA + "\n",
    "src/Makefile": "all:\n",
    "python/olci_l1/__init__.py": "",
    "conf/olci.conf": "threads = 1\n",
}

MARK = "«"


def locate(text: str) -> tuple[int, int, str]:
    """The 1-based line:col of the « marker in `text`, and the text without it."""
    before, marker, _ = text.partition(MARK)
    assert marker, "the case has no « marker"
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return line, column, text.replace(MARK, "", 1)


def edit(text: str, old: str, new: str) -> str:
    """`text` with the one occurrence of `old` replaced: a case that matches nothing is a bug."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)

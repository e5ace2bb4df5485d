"""A small real processor, written fresh for each test, with COTS, system packages and app code."""

from __future__ import annotations

import hashlib
import io
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

DEMO_SCRIPT = """#!/bin/sh
# the processor's own code: prints its version, or lists the COTS it runs with
case "$1" in
  --version) echo "{name} {version}" ;;
  --cots) cat /opt/cots/tool-a/VERSION /opt/cots/tool-b/VERSION ;;
  *) echo "usage: demo --version|--cots" >&2; exit 2 ;;
esac
"""


def cots_tarball(path: Path, name: str, payload_bytes: int) -> str:
    """A deterministic COTS tarball `<name>-1.0/{VERSION,bin/blob}`; returns its sha256."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as archive:
        for member, data in (
            (f"{name}-1.0/VERSION", f"{name} 1.0\n".encode()),
            (f"{name}-1.0/bin/blob", hashlib.sha256(name.encode()).digest() * (payload_bytes // 32)),
        ):
            info = tarfile.TarInfo(member)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            archive.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_processor(
    directory: Path,
    name: str,
    *,
    version: str = "1.0.0",
    runtime_packages: tuple[str, ...] = ("bzip2",),
    app_install: str = "",
    expect_stdout: str | None = None,
) -> Path:
    (directory / "cots").mkdir(parents=True)
    (directory / "bin").mkdir()
    (directory / "conf").mkdir()
    sums = {
        tool: cots_tarball(directory / "cots" / f"{tool}-1.0.tar.gz", tool, 64 * 1024)
        for tool in ("tool-a", "tool-b")
    }
    script = directory / "bin" / "demo"
    script.write_text(DEMO_SCRIPT.format(name=name, version=version), encoding="utf-8")
    script.chmod(0o755)
    (directory / "conf" / "demo.toml").write_text("threshold = 0.5\n", encoding="utf-8")
    cots = "".join(
        f"""  - name: {tool}
    version: "1.0"
    source: cots/{tool}-1.0.tar.gz
    sha256: {digest}
    extract_to: /opt/cots/{tool}
    strip_components: 1
    license: proprietary
"""
        for tool, digest in sums.items()
    )
    packages = f"system_packages:\n  runtime: [{', '.join(runtime_packages)}]\n" if runtime_packages else ""
    install = f"  install: {app_install!r}\n" if app_install else ""
    expected = expect_stdout if expect_stdout is not None else f"{name} {version}"
    (directory / "processor.yaml").write_text(
        f"""schema_version: 1
processor:
  name: {name}
  version: {version}
  description: imagekit engine test processor
  licenses: [Apache-2.0]
base:
  profile: debian-12
{packages}cots:
{cots}app:
  copy:
    - {{from: bin/, to: /opt/processor/bin/}}
    - {{from: conf/, to: /opt/processor/conf/}}
{install}runtime:
  workdir: /opt/processor
  entrypoint: [/opt/processor/bin/demo]
tests:
  - name: version
    run: [/opt/processor/bin/demo, --version]
    expect_stdout: "{expected}"
  - name: cots
    run: [/opt/processor/bin/demo, --cots]
    expect_stdout: "tool-a 1.0"
""",
        encoding="utf-8",
    )
    return directory


ProcessorFactory = Callable[..., Path]


@pytest.fixture
def make_processor(tmp_path: Path) -> ProcessorFactory:
    """Writes a processor with a unique name (so tags never collide) and returns its directory."""

    def make(**options: object) -> Path:
        name = f"ik-test-{uuid.uuid4().hex[:8]}"
        return write_processor(tmp_path / name, name, **options)  # type: ignore[arg-type]

    return make

"""Everyday commands at mission scale: start-up, validate and render of 1,000 processors.

Each figure is printed next to a baseline measured in the same run: `python -c pass` for start-up,
and the old way for the batches (one `imagekit` process per processor, timed for SAMPLE of them
and extrapolated). The 1,000 processors (3 KB manifests, one COTS archive each) live in one
committed git repository, as a mission keeps them. Every batch-rendered processor is compared,
byte for byte, with the same processor rendered alone through the API.

Caches: .pyc files are warm (one untimed start first); the page cache is warm (the files were just
written); the COTS hash cache is cold for the first validate of the batch, warm for the second.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from imagekit.catalog import BaseRef, load_catalog, record_base
from imagekit.config import load_profile
from imagekit.render import render_processor

COUNT = int(os.environ.get("BENCH_CLI_COUNT", "1000"))
SAMPLE = 20
REPEAT = 5
IMAGEKIT = str(Path(sys.executable).with_name("imagekit"))
DIGEST = "sha256:" + "5e" * 32
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.org",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.org",
}

MANIFEST = """\
# Bench processor {index}: a Level-2 retrieval with one vendor table shipped as COTS.
schema_version: 1
processor:
  name: {name}
  version: "1.{index}.0"
  description: Retrieves a geophysical variable from Level-1 radiances (bench processor {index})
  maintainers: ["EO Processing Team <eo-processing@example.org>"]
  licenses: [Apache-2.0]
base:
  profile: debian-12-python
system_packages:
  runtime: [ca-certificates, libgomp1]
cots:
  - name: {name}-table
    version: "2.{index}"
    source: cots/{name}-table.tar.gz
    sha256: {sha256}
    extract_to: /opt/{name}-table
    strip_components: 1
    env:
      TABLE_DIR: /opt/{name}-table
      PATH: /opt/{name}-table/bin:$PATH
    license: LicenseRef-bench-table
app:
  copy:
    - {{from: conf/, to: /opt/processor/conf/}}
    - {{from: bin/, to: /opt/processor/bin/}}
runtime:
  workdir: /opt/processor
  user: "1000:1000"
  env:
    RETRIEVAL_CONF: /opt/processor/conf/retrieval.toml
    RETRIEVAL_THREADS: "4"
  entrypoint: [/opt/processor/bin/retrieve]
executables:
  - name: retrieve
    command: [/opt/processor/bin/retrieve]
    inputs: [l1_radiance, auxiliary_meteo]
    outputs: [l2_product]
    resources: {{cores: 4, ram_gb: 8, walltime_h: 1.5}}
  - name: check
    command: [/opt/processor/bin/retrieve, --check]
    inputs: [l2_product]
    outputs: [report]
    resources: {{cores: 1, ram_gb: 1, walltime_h: 0.1}}
tests:
  - name: version
    run: [/opt/processor/bin/retrieve, --version]
    expect_stdout: retrieve 1.{index}.0
  - name: table
    run: [ls, /opt/{name}-table/lib]
    expect_stdout: table.bin
  - name: config
    run: [cat, /opt/processor/conf/retrieval.toml]
    expect_stdout: "threshold = 0.{index}"
  - name: unknown-option
    run: [/opt/processor/bin/retrieve, --no-such-option]
    expect_exit: 2
labels:
  eu.example.mission: Sentinel-{mission}
  eu.example.product: L2-{index}
  eu.example.team: eo-processing
  eu.example.contact: eo-processing@example.org
# Notes kept with the manifest, as scientists do: what the retrieval needs and where it runs.
# The table is versioned with the vendor's release; the threshold is tuned per mission phase.
# The processor reads Level-1 radiances and meteorological auxiliary data and writes one product.
# Resources are what the operators' accounting measured on the reference data set, rounded up.
# Smoke tests run without network, as the image's user, with the default timeout.
# Changing the table needs a new COTS version and checksum; the archive stays in the repository.
# Contact the processing team before changing the executables: the workflow system reads them.
# Mission phases: commissioning (thresholds relaxed), routine (as configured), end of life.
# Reference data set: two orbits per season, stored with the mission's validation data.
# Known limits: sun glint areas are flagged, not retrieved; polar night gives no product.
# Reprocessing campaigns pin this manifest's version; a new version is a new campaign.
# Operators: the image is published to CVMFS after the scan passes; sites pull nothing else.
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), *args], env={**os.environ, **GIT_ENV}, check=True, capture_output=True
    )


def make_mission(root: Path) -> list[Path]:
    """COUNT processors in one committed repository; each COTS archive is distinct."""
    directories = []
    for index in range(COUNT):
        name = f"bench-{index:04d}"
        directory = root / name
        for sub in ("cots", "conf", "bin"):
            (directory / sub).mkdir(parents=True)
        payload = os.urandom(1024)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            info = tarfile.TarInfo(f"{name}-table-2.{index}/lib/table.bin")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
        (directory / "cots" / f"{name}-table.tar.gz").write_bytes(buffer.getvalue())
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()
        (directory / "conf" / "retrieval.toml").write_text(f"threshold = 0.{index}\n")
        (directory / "bin" / "retrieve").write_text(f"#!/bin/sh\necho retrieve 1.{index}.0\n")
        (directory / "bin" / "retrieve").chmod(0o755)
        text = MANIFEST.format(index=index, name=name, sha256=digest, mission=index % 6 + 1)
        (directory / "processor.yaml").write_text(text)
        directories.append(directory)
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "mission")
    return directories


def run(*args: str, env: dict[str, str]) -> float:
    """Wall seconds of one command; it must succeed."""
    start = time.perf_counter()
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])}...: exit {result.returncode}\n{result.stderr[-2000:]}")
    return elapsed


def best(*args: str, env: dict[str, str]) -> tuple[float, float]:
    """(minimum, median) wall seconds over REPEAT runs: the minimum is the least disturbed."""
    times = [run(*args, env=env) for _ in range(REPEAT)]
    return min(times), statistics.median(times)


def tree(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(path.relative_to(folder)): (path.lstat().st_mode, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="imagekit-bench-cli-") as scratch:
        root = Path(scratch)
        data = root / "data"
        for name in load_catalog().profiles:  # render only: nothing is built
            record_base(data, name, BaseRef(image=f"127.0.0.1:5000/imagekit/base/{name}", digest=DIGEST))
        env = {**os.environ, **GIT_ENV, "IMAGEKIT_PATHS_DATA_DIR": str(data)}
        env.pop("CI_COMMIT_TAG", None)
        start = time.perf_counter()
        mission = root / "mission"
        directories = make_mission(mission)
        size = statistics.mean(len((d / "processor.yaml").read_bytes()) for d in directories)
        made = time.perf_counter() - start
        print(f"{COUNT} processors, {size / 1024:.1f} KB manifests, generated in {made:.1f} s")
        one = str(directories[0])
        run(IMAGEKIT, "--help", env=env)  # .pyc written, page cache warm

        rows: list[tuple[str, float, str]] = []
        python, _ = best(sys.executable, "-c", "pass", env=env)
        help_min, help_median = best(IMAGEKIT, "--help", env=env)
        validate_min, validate_median = best(IMAGEKIT, "validate", one, env=env)
        rows += [
            ("python -c pass (baseline)", python, ""),
            ("imagekit --help (target < 0.3 s)", help_min, f"median {help_median:.3f} s"),
            (
                "imagekit validate, one manifest (target < 0.3 s)",
                validate_min,
                f"median {validate_median:.3f} s",
            ),
        ]

        (data / "checksums.json").unlink(missing_ok=True)
        cold = run(IMAGEKIT, "validate", str(mission), env=env)
        warm = run(IMAGEKIT, "validate", str(mission), env=env)
        sample = [run(IMAGEKIT, "validate", str(d), env=env) for d in directories[:SAMPLE]]
        old_validate = statistics.mean(sample) * COUNT
        rows += [
            (f"validate {COUNT}, one process, hash cache cold (target < 5 s)", cold, ""),
            (f"validate {COUNT}, one process, hash cache warm (target < 5 s)", warm, ""),
            (
                f"validate {COUNT} one process each (from {SAMPLE})",
                old_validate,
                f"{old_validate / warm:.0f}x",
            ),
        ]

        batch_out = root / "batch"
        rendered = run(IMAGEKIT, "render", *map(str, directories), "-o", str(batch_out), env=env)
        sample = [
            run(IMAGEKIT, "render", str(d), "-o", str(root / "alone-cli" / d.name), env=env)
            for d in directories[:SAMPLE]
        ]
        old_render = statistics.mean(sample) * COUNT
        rows += [
            (f"render {COUNT}, one process (target < 10 s)", rendered, ""),
            (f"render {COUNT} one process each (from {SAMPLE})", old_render, f"{old_render / rendered:.0f}x"),
        ]

        site = load_profile(None, env=env).profile.site  # what the command used
        differing = [
            d.name
            for d in directories[:SAMPLE]
            if tree(root / "alone-cli" / d.name) != tree(batch_out / d.name)
        ]
        for d in directories:
            alone = render_processor(d, root / "alone" / d.name, data_dir=data, site=site, env=env).result
            if tree(alone.context_dir) != tree(batch_out / d.name):
                differing.append(d.name)
            shutil.rmtree(alone.context_dir)

        print(f"{'':58}{'seconds':>9}  ratio")
        for label, seconds, note in rows:
            ratio = f"{seconds / python:.0f}x python" if "python -c" not in label and seconds < 1 else ""
            print(f"{label:58}{seconds:9.3f}  {note or ratio}")
        if differing:
            raise SystemExit(
                f"batch render differs from rendering alone for: {', '.join(sorted(set(differing)))}"
            )
        print(f"batch render byte-identical to rendering alone: all {COUNT} (API), {SAMPLE} (command)")


if __name__ == "__main__":
    main()

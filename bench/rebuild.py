"""Code-only rebuild against a cold build: imagekit's layered Dockerfile versus a naive one.

A processor with 2 x 110 MB of COTS and ~1 MB of its own code is built cold (no cache), then rebuilt
after a one-line code change. The naive baseline, in the same run and on the same engine, is what a
scientist writes by hand: `COPY . /opt/processor`, then the installs. Printed: build times, bytes of
the layers each rebuild created, and the ratios against the targets (cold build <= 1.1 x the naive
one; rebuild <= 15% of cold; new bytes <= 1.05 x the code a change re-ships).

Other builds may share the engine, so the bench removes only its own tags and the stage images its
own builds left dangling, read from their output (" ---> <id>"), never every dangling image.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from imagekit.catalog import resolve_base
from imagekit.config import Profile, load_profile
from imagekit.engines.base import named_by, step_images
from imagekit.pipeline import build_processor
from imagekit.render import WORK_DIR

COTS_MB = 110
CODE_FILES = 8
CODE_FILE_BYTES = 128 * 1024
COLD_TARGET = 1.1

NAIVE_DOCKERFILE = """\
FROM {base}
COPY . /opt/processor
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bzip2 \\
    && rm -rf /var/lib/apt/lists/*
RUN cd /opt/processor && sha256sum --check --strict cots.sha256 \\
    && mkdir -p /opt/cots/tool-a /opt/cots/tool-b \\
    && tar -xzf cots/tool-a.tar.gz -C /opt/cots/tool-a --strip-components=1 \\
    && tar -xzf cots/tool-b.tar.gz -C /opt/cots/tool-b --strip-components=1
USER 1000:1000
ENTRYPOINT ["/opt/processor/bin/demo"]
"""


def make_cots(path: Path, name: str) -> str:
    """A tarball of incompressible bytes, new every run so no cache can serve it."""
    payload = path.parent / f"{name}.bin"
    with payload.open("wb") as out:
        for _ in range(COTS_MB):
            out.write(os.urandom(1024 * 1024))
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        archive.add(payload, arcname=f"{name}-1.0/lib/{name}.so")
    payload.unlink()
    return subprocess.run(
        ["sha256sum", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()[0]


def make_processor(root: Path) -> Path:
    directory = root / "bench-proc"
    for sub in ("cots", "bin", "src", "conf"):
        (directory / sub).mkdir(parents=True)
    sums = {tool: make_cots(directory / "cots" / f"{tool}.tar.gz", tool) for tool in ("tool-a", "tool-b")}
    (directory / "bin" / "demo").write_text("#!/bin/sh\necho bench 1.0.0\n")
    (directory / "bin" / "demo").chmod(0o755)
    for index in range(CODE_FILES):
        (directory / "src" / f"module_{index}.py").write_text(
            "".join(f"VALUE_{index}_{line} = {line}\n" for line in range(CODE_FILE_BYTES // 24))
        )
    (directory / "conf" / "bench.toml").write_text("threshold = 0.5\n")
    (directory / "cots.sha256").write_text(
        "".join(f"{digest}  cots/{tool}.tar.gz\n" for tool, digest in sums.items())
    )
    cots = "".join(
        f"  - {{name: {tool}, version: '1.0', source: cots/{tool}.tar.gz, sha256: {digest},"
        f" extract_to: /opt/cots/{tool}, strip_components: 1}}\n"
        for tool, digest in sums.items()
    )
    (directory / "processor.yaml").write_text(
        "schema_version: 1\n"
        "processor: {name: bench-proc, version: 1.0.0}\n"
        "base: {profile: debian-12}\n"
        "system_packages: {runtime: [bzip2]}\n"
        f"cots:\n{cots}"
        "app:\n  copy:\n"
        "    - {from: bin/, to: /opt/processor/bin/}\n"
        "    - {from: src/, to: /opt/processor/src/}\n"
        "    - {from: conf/, to: /opt/processor/conf/}\n"
        "runtime: {entrypoint: [/opt/processor/bin/demo]}\n"
        "tests: [{name: version, run: [/opt/processor/bin/demo], expect_stdout: bench 1.0.0}]\n"
    )
    return directory


def code_bytes(directory: Path) -> int:
    """What a code change re-ships at best: the app's own files (bin, src, conf)."""
    return sum(
        f.stat().st_size
        for sub in ("bin", "src", "conf")
        for f in (directory / sub).rglob("*")
        if f.is_file()
    )


def history(docker: str, image: str) -> list[tuple[str, int]]:
    rows = subprocess.run(
        [docker, "image", "history", "--no-trunc", "--human=false", "--format", "{{.ID}}\t{{.Size}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [(row.split("\t")[0], int(row.split("\t")[1])) for row in rows]


def new_bytes(docker: str, before: str, after: str) -> int:
    """Bytes of the layers `after` has that `before` did not: what a push re-ships."""
    old = {layer_id for layer_id, _ in history(docker, before) if layer_id != "<missing>"}
    return sum(size for layer_id, size in history(docker, after) if layer_id not in old)


def dangling(docker: str) -> set[str]:
    listed = [docker, "images", "--quiet", "--no-trunc", "--filter", "dangling=true"]
    return set(subprocess.run(listed, capture_output=True, text=True, check=True).stdout.split())


def remove_own(docker: str, tags: list[str], steps: set[str]) -> None:
    """The bench's tags, then the dangling images among its own builds' step images: a build running
    beside the bench has its intermediate images dangling for a moment, and must keep them."""
    subprocess.run([docker, "image", "rm", "--force", *tags], capture_output=True, check=False)
    own = named_by(dangling(docker), steps)
    if own:
        subprocess.run([docker, "image", "rm", "--force", *own], capture_output=True, check=False)


def change_code(directory: Path) -> None:
    with (directory / "src" / "module_0.py").open("a") as module:
        module.write("FIXED = True  # a scientist's one-line fix\n")


def timed(action) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    action()
    return time.monotonic() - start


ORDER = "ABBAAB"
"""Cold builds, imagekit (A) and naive (B) interleaved: a shared machine's load and the disk's
write-back then weigh on both alike; the medians are compared."""


def imagekit_builds(profile: Profile, directory: Path, steps: set[str]) -> Callable[[bool], None]:
    def build(no_cache: bool) -> None:
        if no_cache:  # a cold build renders too: the COTS are repacked again, not reused
            shutil.rmtree(directory / WORK_DIR, ignore_errors=True)
        try:
            build_processor(directory, profile, on_line=lambda _line: None, no_cache=no_cache)
        finally:
            log = directory / WORK_DIR / "build.log"
            steps.update(step_images(log.read_text(encoding="utf-8", errors="replace")))

    return build


def naive_builds(profile: Profile, directory: Path, steps: set[str]) -> tuple[Path, Callable[[bool], None]]:
    base = resolve_base("debian-12", profile.data_dir).pinned
    context = directory.parent / "naive"
    shutil.copytree(directory, context, ignore=shutil.ignore_patterns(".imagekit"))
    (context / "Dockerfile").write_text(NAIVE_DOCKERFILE.format(base=base))
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    docker = profile.engine.docker

    def build(no_cache: bool) -> None:
        command = [docker, "build", "--network", profile.engine.network, "-t", "bench-naive:latest"]
        flags = ["--no-cache"] if no_cache else []
        done = subprocess.run([*command, *flags, str(context)], env=env, capture_output=True, text=True)
        steps.update(step_images(done.stdout))
        done.check_returncode()

    return context, build


def cold_builds(ours: Callable[[bool], None], naive: Callable[[bool], None]) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {"A": [], "B": []}
    for who in ORDER:
        os.sync()  # no earlier run's dirty pages are written back during this one
        build = ours if who == "A" else naive
        seconds[who].append(timed(lambda build=build: build(True)))  # type: ignore[misc]
    return seconds


def code_only_rebuild(
    docker: str, build: Callable[[bool], None], directory: Path, image: str, before: str
) -> tuple[float, int]:
    """After a cold build: seconds of the rebuild after a one-line change, and the new layers' bytes."""
    subprocess.run([docker, "tag", image, before], check=True)
    change_code(directory)
    os.sync()
    seconds = timed(lambda: build(False))
    return seconds, new_bytes(docker, before, image)


def main() -> int:
    profile = load_profile().profile
    docker = profile.engine.docker
    steps: set[str] = set()
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="imagekit-bench-") as tmp:
        directory = make_processor(Path(tmp))
        code = code_bytes(directory)
        try:
            ours = imagekit_builds(profile, directory, steps)
            context, naive = naive_builds(profile, directory, steps)
            cold = cold_builds(ours, naive)
            ours(True)  # the rebuild follows a cold build of its own kind, as in a scientist's day
            rebuild, new = code_only_rebuild(docker, ours, directory, "bench-proc:1.0.0", "bench-proc:before")
            # the engine's first line says whether the rebuild left the COTS out of the context
            print((directory / WORK_DIR / "build.log").read_text(encoding="utf-8").splitlines()[0][:110])
            naive(True)
            naive_rebuild, naive_new = code_only_rebuild(
                docker, naive, context, "bench-naive:latest", "bench-naive:before"
            )
        finally:
            tags = ["bench-proc:1.0.0", "bench-proc:before", "bench-naive:latest", "bench-naive:before"]
            remove_own(docker, tags, steps)
    load.append(os.getloadavg()[0])
    ours_cold, naive_cold = statistics.median(cold["A"]), statistics.median(cold["B"])
    mb = 1e6
    print(
        f"rebuild bench: {2 * COTS_MB} MB of COTS, {code / mb:.2f} MB of code, engine {profile.engine.name}; "
        f"load average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the end"
    )
    print(f"cold builds in the order {ORDER} (A imagekit, B naive), each after a sync:")
    runs = {who: ", ".join(f"{s:.1f}" for s in cold[who]) for who in "AB"}
    print(f"  imagekit: {runs['A']} s; naive: {runs['B']} s")
    print(f"{'':34}{'imagekit':>12}{'naive':>12}{'ratio':>10}")
    print(f"{'cold build, median (s)':34}{ours_cold:12.1f}{naive_cold:12.1f}")
    print(f"{f'cold imagekit / naive (target <= {COLD_TARGET})':34}{ours_cold / naive_cold:12.2f}")
    print(f"{'code-only rebuild (s)':34}{rebuild:12.1f}{naive_rebuild:12.1f}{naive_rebuild / rebuild:9.1f}x")
    print(
        f"{'rebuild / cold (target <= 15%)':34}{rebuild / ours_cold:12.1%}{naive_rebuild / naive_cold:12.1%}"
    )
    print(f"{'new layer bytes (MB)':34}{new / mb:12.2f}{naive_new / mb:12.2f}{naive_new / max(new, 1):9.1f}x")
    print(f"{'new bytes / code (target <= 1.05)':34}{new / code:12.2f}{naive_new / code:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

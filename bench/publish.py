"""CVMFS publish of a 1 GB image on the local backend, next to `tar -x` of the same layers in the same run.

An image of 4 x 256 MiB of incompressible (seeded random) files in layers of their own on the debian-12
base, plus a small code layer, is built with the legacy builder, copied with skopeo to a bench project
of the local registry as 1.0 and, after one-line code changes, 1.1, 1.2 and 1.3. Printed: three full publishes
(each into a tree of its own) interleaved with three `tar -xzf` of the same layer blobs (downloaded
first, so only the unpacking is timed), every run with its load average, and the ratio of the medians
and of the best runs: the machine is shared, and one pair of runs said anything from 0.6 to 1.0 x.
Then the no-op re-publish, the code-only versions (their median) against the median full publish, a
channel flip, and
the same on a real `cvmfs_server`: two full publishes next to two raw `cvmfs_server ingest` of the
same trees (the flat and its chain snapshot) and two of the flat alone, each into a fresh repository of
its own, in the same run; one line says why where none is here.
Scans are skipped with a recorded reason: the bench measures the publication, not Trivy.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from imagekit import cvmfs
from imagekit.catalog import resolve_base
from imagekit.config import Profile, load_profile
from imagekit.cvmfs.backends import ensure_web_server
from imagekit.cvmfs.layout import STATE
from imagekit.devenv import cvmfs as devenv_cvmfs
from imagekit.engines.base import STEP_IMAGE
from imagekit.errors import MissingPartError
from imagekit.registry import RegistryClient

REASON = "benchmark: measures the publication, not the scanner"
NAME = "bench-publish"
ORDER = "PTTPPT"
"""Three full publishes (P) and three `tar -xzf` (T), interleaved so that a drift weighs on both alike."""
SERVER_ORDER = "PRFFRP"
"""cvmfs_server: two full publishes (P), two raw ingests of the same trees (R) and of the flat alone (F)."""
CODE_ONLY = ("1.1", "1.2", "1.3")
"""Code-only versions of 1.0, each published (and timed) on its own: a second takes 1.2-1.5 s on this
machine, so one alone says little about a share near 5 %."""
SEED = 20261130
LAYERS = 4
BIG_FILES, BIG_BYTES = 6, 32 << 20  # per layer: 192 MiB in a few large files ...
SMALL_FILES, SMALL_BYTES = 256, 256 << 10  # ... and 64 MiB in many small ones


def make_context(directory: Path, base: str) -> None:
    """The build context: seeded random files (the same bytes every run, so runs compare)."""
    rng = random.Random(SEED)
    for n in range(LAYERS):
        layer = directory / f"cots-{n}"
        (layer / "lib").mkdir(parents=True)
        (layer / "share").mkdir()
        for i in range(BIG_FILES):
            (layer / "lib" / f"lib{i}.so").write_bytes(rng.randbytes(BIG_BYTES))
        for i in range(SMALL_FILES):
            (layer / "share" / f"table-{i:03}.dat").write_bytes(rng.randbytes(SMALL_BYTES))
    (directory / "code").mkdir()
    (directory / "code" / "run").write_text("#!/bin/sh\necho bench 1.0\n")
    (directory / "code" / "run").chmod(0o755)
    copies = "".join(f"COPY cots-{n} /opt/cots/tool-{n}\n" for n in range(LAYERS))
    (directory / "Dockerfile").write_text(
        f'FROM {base}\n{copies}COPY code /opt/processor\nENTRYPOINT ["/opt/processor/run"]\n'
    )


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command[:3])} failed (exit {done.returncode}): {done.stderr.strip()[-800:]}"
        )


def build_and_push(profile: Profile, directory: Path, version: str) -> set[str]:
    """Build and push `NAME:version`; the IDs of the images this build made (not those it took from
    the cache), so the bench removes only its own and never another build's on the same engine."""
    docker = profile.engine.docker
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    image = f"{NAME}:{version}"
    command = [docker, "build", "--network", profile.engine.network, "-t", image, str(directory)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    made, cached = set(), True  # step 1 (FROM) makes nothing
    for line in done.stdout.splitlines():
        if line.startswith("Step "):
            cached = line.startswith("Step 1/")
        elif line.strip() == "---> Using cache":
            cached = True
        elif (found := STEP_IMAGE.match(line)) and not cached:
            made.add(found.group(1))
    if done.returncode != 0:
        remove_images(docker, [], made)
        raise SystemExit(f"docker build failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    target = f"docker://{profile.registry.url}/{profile.registry.project}/{NAME}:{version}"
    copy = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"docker-daemon:{image}", target]
    run(copy)
    return made


def remove_images(docker: str, tags: list[str], made: set[str]) -> None:
    """The bench's tags, then whatever of its own images is left; an image that has become another's
    parent or got a tag meanwhile is refused by the engine (no --force) and stays."""
    subprocess.run([docker, "image", "rm", "--force", *tags], capture_output=True, check=False)
    listed = [docker, "images", "--all", "--quiet"]
    present = set(subprocess.run(listed, capture_output=True, text=True, check=False).stdout.split())
    for image in made & present:
        subprocess.run([docker, "image", "rm", image], capture_output=True, check=False)


def download_layers(profile: Profile, directory: Path) -> list[Path]:
    """The layer blobs of 1.0, for the `tar -xzf` baseline."""
    directory.mkdir()
    repository = f"{profile.registry.project}/{NAME}"
    paths = []
    with RegistryClient.from_profile(profile) as client:
        manifest = client.manifest(repository, "1.0").json()
        for n, entry in enumerate(manifest["layers"]):
            path = directory / f"{n}.tar.gz"
            with client.blob(repository, entry["digest"]) as stream, path.open("wb") as out:
                while chunk := stream.read(1 << 20):
                    out.write(chunk)
            paths.append(path)
    return paths


def tar_baseline(paths: list[Path], target: Path) -> tuple[float, float]:
    """Seconds (wall, and CPU of tar and gzip) `tar -xzf` takes for the layer blobs, one after the
    other into one directory (removed with the work directory, after every measurement: see main)."""
    target.mkdir()
    started, cpu = time.monotonic(), _cpu(resource.RUSAGE_CHILDREN)
    for path in paths:
        run(["tar", "-xzf", str(path), "-C", str(target)])
    return time.monotonic() - started, _cpu(resource.RUSAGE_CHILDREN) - cpu


def _cpu(who: int) -> float:
    """User plus system CPU seconds: what a busy shared machine does not stretch, unlike wall time."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def server_bench(profile: Profile, root: Path, trees: list[str]) -> list[str]:
    """The same publications on a real `cvmfs_server`, each next to its baselines from the same run:
    raw `cvmfs_server ingest` of a GNU tar of the trees a full publication ingests (the flat and its
    chain snapshot, whose shared files are hard links, as the local backend has them under `root`),
    and of the flat alone. Every full publication and every raw ingest goes into a fresh repository of
    its own (removed after), in the order PRFFRP: ingesting contents a repository already stores is
    faster, which favoured whichever came second. One line saying why where no cvmfs_server or no
    Apache is available."""
    binary = shutil.which(profile.cvmfs.server_binary or "cvmfs_server")
    if binary is None:
        return [
            "cvmfs_server backend: not measured: no cvmfs_server on this machine (Debian has no "
            "cvmfs-server package and CERN's apt repository is not configured here)"
        ]
    try:
        ensure_web_server(lambda _: None)
    except MissingPartError as exc:
        return [f"cvmfs_server backend: not measured: {exc.message}"]
    server = profile.model_copy(deep=True)
    server.cvmfs.backend, server.cvmfs.root = "cvmfs_server", ""
    runs: dict[str, list[float]] = {"P": [], "R": [], "F": []}
    for n, kind in enumerate(SERVER_ORDER):
        repository = f"imagekit-bench-{uuid.uuid4().hex[:8]}.test"
        devenv_cvmfs.create_repository(binary, repository, lambda _: None)
        try:
            os.sync()
            if kind != "P":
                runs[kind].append(_raw_ingest(binary, repository, root, trees if kind == "R" else trees[:1]))
                continue
            server.cvmfs.repository = repository
            runs[kind].append(cvmfs.publish(server, f"{NAME}:1.0", skip_reason=REASON).seconds)
            if n == 0:  # the other figures, in the first publication's repository
                noop = cvmfs.publish(server, f"{NAME}:1.0", skip_reason=REASON).seconds
                codes = [cvmfs.publish(server, f"{NAME}:{v}", skip_reason=REASON).seconds for v in CODE_ONLY]
                cvmfs.move_channel(server, NAME, "dev", "1.0")
                started = time.monotonic()
                cvmfs.move_channel(server, NAME, "dev", "1.1")
                flip = time.monotonic() - started
        except SystemExit as exc:
            return [f"cvmfs_server ingest: {exc}"]
        finally:
            subprocess.run([binary, "rmfs", "-f", repository], capture_output=True, check=False, cwd="/")
    full, raw, flat, code = (statistics.median(each) for each in (*runs.values(), codes))
    listed = {kind: ", ".join(f"{each:.1f}" for each in seconds) for kind, seconds in runs.items()}
    code_runs = ", ".join(f"{each:.2f}" for each in codes)
    return [
        f"cvmfs_server, each in a fresh repository, order {SERVER_ORDER}: full publish {listed['P']} s; raw "
        f"ingest of the same trees {listed['R']} s, of the flat alone {listed['F']} s; code-only versions "
        f"{code_runs} s",
        f"{'cvmfs_server: full publish (median)':40}{full:10.1f}",
        f"{'  raw tar | ingest, median (>= 0.8x)':40}{raw:10.1f}{'':10}{raw / full:9.2f}x",
        f"{'    the flat alone (no chain snapshot)':40}{flat:10.1f}{'':10}{flat / full:9.2f}x",
        f"{'  no-op re-publish (target < 1 s)':40}{noop:10.2f}",
        f"{'  code-only version, median (< 5%)':40}{code:10.2f}{'':10}{code / full:10.1%}",
        f"{'  channel flip (target < 1 s)':40}{flip:10.2f}",
    ]


def _raw_ingest(binary: str, repository: str, root: Path, trees: list[str]) -> float:
    """Seconds `tar | cvmfs_server ingest` of the trees takes (no --catalog: CVMFS 2.11.5 asserts with it
    on a flat that carries its own catalog marker)."""
    started = time.monotonic()
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(root), "-cf", "-", *trees], stdout=subprocess.PIPE
    )
    assert tar.stdout is not None
    done = subprocess.run(
        [binary, "ingest", "-t", "-", "-b", "bench/raw", repository],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    tar.stdout.close()
    tar.wait()
    if done.returncode != 0:
        raise SystemExit(f"failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-200:]}")
    return time.monotonic() - started


def cleanup(profile: Profile) -> None:
    repository = f"{profile.registry.project}/{NAME}"
    with RegistryClient.from_profile(profile) as client:
        for digest in {client.manifest_digest(repository, tag) for tag in client.tags(repository)} - {None}:
            client.delete_manifest(repository, str(digest))


def main() -> int:
    profile = load_profile().profile
    profile.registry.project = f"imagekit-bench-{uuid.uuid4().hex[:8]}"
    docker = profile.engine.docker
    base = resolve_base("debian-12", profile.data_dir).pinned
    made: set[str] = set()
    publishes: list[tuple[float, float, float]] = []  # seconds, CPU seconds, load average at its start
    tars: list[tuple[float, float, float]] = []
    # nothing is deleted before the last measurement: removing a gigabyte (ext4 with online discard)
    # goes on in the kernel for seconds, and made the hard links of a code-only version 3-5 times slower
    with tempfile.TemporaryDirectory(prefix="imagekit-bench-publish-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        profile.cvmfs.backend = "local"
        try:
            make_context(work / "context", base)
            made |= build_and_push(profile, work / "context", "1.0")
            for version in CODE_ONLY:
                fix = f"#!/bin/sh\necho bench {version}  # a one-line fix\n"
                (work / "context" / "code" / "run").write_text(fix)
                made |= build_and_push(profile, work / "context", version)
            blobs = download_layers(profile, work / "blobs")
            load_start = os.getloadavg()[0]
            for n, kind in enumerate(ORDER):
                os.sync()  # each timed run starts with no other run's dirty pages still being written back
                load = os.getloadavg()[0]
                if kind == "P":
                    profile.cvmfs.root = str(work / f"tree-{n}")
                    cpu = _cpu(resource.RUSAGE_SELF)
                    full = cvmfs.publish(profile, f"{NAME}:1.0", skip_reason=REASON)
                    publishes.append((full.seconds, _cpu(resource.RUSAGE_SELF) - cpu, load))
                else:
                    tars.append((*tar_baseline(blobs, work / f"tar-{n}"), load))
            load_end = os.getloadavg()[0]
            noop = cvmfs.publish(profile, f"{NAME}:1.0", skip_reason=REASON)  # in the last full one's tree
            codes = [cvmfs.publish(profile, f"{NAME}:{version}", skip_reason=REASON) for version in CODE_ONLY]
            cvmfs.move_channel(profile, NAME, "dev", "1.0")
            started = time.monotonic()
            cvmfs.move_channel(profile, NAME, "dev", "1.1")
            flip = time.monotonic() - started
            root = profile.cvmfs_root  # the last full publish's tree: one flat, one chain snapshot
            (chain,) = [
                str(each.relative_to(root)) for each in (root / STATE / "chains").iterdir() if each.is_dir()
            ]
            on_server = server_bench(profile, root, [full.publication.flat, chain])
        finally:
            cleanup(profile)
            remove_images(docker, [f"{NAME}:{version}" for version in ("1.0", *CODE_ONLY)], made)
    mb = full.publication.bytes_written / 1e6
    print(f"publish bench: {mb:.0f} MB in {full.publication.layers_applied} layers, local backend")
    print(f"load average (1 min) before and after the timed runs: {load_start:.1f}, {load_end:.1f}")
    print(f"{'':40}{'seconds':>10}{'MB/s':>10}{'CPU s':>10}{'load':>8}")
    for n, kind in enumerate(ORDER):
        seconds, cpu_seconds, load = (publishes if kind == "P" else tars)[ORDER[:n].count(kind)]
        label = f"{n + 1}. {'full publish' if kind == 'P' else 'tar -xzf of the same layers'}"
        print(f"{label:40}{seconds:10.1f}{mb / seconds:10.0f}{cpu_seconds:10.1f}{load:8.1f}")
    full_median = statistics.median(p[0] for p in publishes)
    tar_median = statistics.median(t[0] for t in tars)
    best = min(t[0] for t in tars) / min(p[0] for p in publishes)
    ratio = tar_median / full_median
    print(f"{'publish vs tar -x (target >= 0.8x)':40}{'median':>10}{ratio:9.2f}x{'best':>10}{best:9.2f}x")
    cpu_ratio = statistics.median(t[1] for t in tars) / statistics.median(p[1] for p in publishes)
    print(f"{'  the same in CPU seconds (median)':40}{'':10}{cpu_ratio:9.2f}x")
    print(f"{'no-op re-publish (target < 1 s)':40}{noop.seconds:10.2f}")
    code = statistics.median(each.seconds for each in codes)
    print(f"{'code-only versions':40}{', '.join(f'{each.seconds:.2f}' for each in codes):>10}")
    print(f"{'code-only version, median (< 5%)':40}{code:10.2f}{'':10}{code / full_median:10.1%}")
    written = max(each.publication.bytes_written for each in codes)
    print(f"{'  bytes each wrote (at most)':40}{written / 1e6:9.2f}M")
    print(f"{'channel flip (target < 1 s)':40}{flip:10.2f}")
    print("\n".join(on_server))
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"(publish bench took {time.monotonic() - started:.0f} s)")
    sys.exit(code)

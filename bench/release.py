"""End-to-end `imagekit release` of a code-only change of the climate example, next to a full release of
a naive single-COPY Dockerfile of the same processor, in one run on the same engine and registry.

processors/cdr-regrid-demo is copied to a temporary directory (renamed cdr-regrid-bench, so its local
tags never touch the example's), with a registry project and CVMFS root of the bench's own. It is
released as 1.0.0, then a one-line fix in its Python part is released as 1.0.1: that second
`imagekit release` (validate, render, build, test, scan, push, publish, promote) is what a scientist's
fix costs. The naive baseline starts `COPY . /opt/processor` on the same pinned base and installs
everything after it, so a code change rebuilds and re-ships all of it; it goes through the same
steps with plain tools (docker build and run, `imagekit scan`, `skopeo copy`, `imagekit publish`;
there is no channel to move). Bytes pushed are read from the registry: the sizes of the blobs and
manifests the project's repositories hold after a release and did not before (a push uploads only
what a repository lacks). Scans run without a vulnerability DB (`when-available`), as on these
machines. Times are printed, never asserted.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from imagekit.catalog import resolve_base
from imagekit.config import Profile, load_profile
from imagekit.manifest import load_manifest
from imagekit.registry import RegistryClient

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "processors" / "cdr-regrid-demo"
IMAGEKIT = str(ROOT / ".venv" / "bin" / "imagekit")
NAME = "cdr-regrid-bench"
NAIVE = "cdr-regrid-naive"
BENCH_LABEL = "imagekit.bench=release"
REASON = "benchmark baseline: pushed with skopeo, which attaches no scan"

NAIVE_DOCKERFILE = """\
FROM {base}
LABEL {label}
COPY . /opt/processor
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
RUN cp /opt/processor/site/*.crt /usr/local/share/ca-certificates/ && update-ca-certificates \\
    && apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {packages} \\
    && rm -rf /var/lib/apt/lists/* \\
    && cd /opt/processor \\
    && echo '{sha256}  {source}' | sha256sum --check --strict \\
    && mkdir -p {extract_to} \\
    && tar -xf {source} -C {extract_to} --no-same-owner --strip-components={strip} \\
    && python3 -m venv /opt/venv \\
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes --requirement requirements.lock \\
    && /opt/venv/bin/pip install --no-cache-dir --no-deps --no-index --no-build-isolation ./python
ENV PATH="/opt/venv/bin:{extract_to}/bin:$PATH" CDR_REGRID_CONF=/opt/processor/conf/cdr-regrid.toml
USER 1000:1000
ENTRYPOINT ["cdr-regrid"]
"""


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-1500:]
        raise SystemExit(f"{' '.join(command[:3])} failed (exit {done.returncode}):\n{output}")
    return done.stdout


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Seconds and standard output (the release's summary table)."""
    start = time.monotonic()
    output = run(command, env)
    return time.monotonic() - start, output


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def make_processor(root: Path) -> Path:
    """The example under the bench's name, without its local build state."""
    directory = root / NAME
    shutil.copytree(EXAMPLE, directory, ignore=shutil.ignore_patterns(".imagekit"))
    manifest = directory / "processor.yaml"
    text = manifest.read_text()
    text = text.replace("name: cdr-regrid-demo", f"name: {NAME}", 1)
    manifest.write_text(text)
    return directory


def change_code(directory: Path) -> None:
    """A scientist's one-line fix in the Python part, released as the next version."""
    with (directory / "python" / "cdr_regrid" / "__init__.py").open("a") as module:
        module.write("FIXED = True  # a scientist's one-line fix\n")
    manifest = directory / "processor.yaml"
    text, count = re.subn(r'^(  version: )"1\.0\.0"$', r'\g<1>"1.0.1"', manifest.read_text(), flags=re.M)
    if count != 1:
        raise SystemExit(f"{manifest}: expected one processor version 1.0.0 to bump")
    manifest.write_text(text)


def naive_context(directory: Path, profile: Profile) -> Path:
    """The processor's files plus the site CA (the same mirrors as imagekit's render) and the naive
    Dockerfile, built from this processor.yaml so it installs exactly what the render does."""
    processor = load_manifest(directory).processor
    (cots,) = processor.cots
    context = directory.parent / "naive"
    shutil.copytree(directory, context, ignore=shutil.ignore_patterns(".imagekit"))
    shutil.copytree(directory / ".imagekit" / "docker" / "site", context / "site")
    (context / "Dockerfile").write_text(
        NAIVE_DOCKERFILE.format(
            base=resolve_base(processor.base.profile, profile.data_dir).pinned,
            label=BENCH_LABEL,
            packages=" ".join(processor.system_packages.runtime),
            sha256=cots.sha256,
            source=cots.source,
            extract_to=cots.extract_to,
            strip=cots.strip_components,
        )
    )
    return context


def naive_release(profile: Profile, context: Path, version: str, env: dict[str, str], work: Path) -> float:
    """Build, smoke-test (the manifest's tests), scan, push with skopeo, publish: seconds in all."""
    docker = profile.engine.docker
    image = f"{NAIVE}:{version}"
    tests = load_manifest(context).processor.tests
    start = time.monotonic()
    build = [docker, "build", "--network", profile.engine.network, "-q", "-t", image, str(context)]
    run(build, {**env, "DOCKER_BUILDKIT": "0"})
    for test in tests:
        command = [
            docker,
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            test.run[0],
            image,
            *test.run[1:],
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != test.expect_exit or (test.expect_stdout or "") not in done.stdout:
            raise SystemExit(f"naive {image}: smoke test {test.name} failed: {done.stderr.strip()[-500:]}")
    run([IMAGEKIT, "scan", image, "--reports", str(work / "scans")], env)
    target = f"docker://{profile.registry.url}/{profile.registry.project}/{image}"
    tls = [] if not profile.registry.insecure else ["--dest-tls-verify=false"]
    run(["skopeo", "copy", "--quiet", *tls, f"docker-daemon:{image}", target], env)
    run([IMAGEKIT, "publish", "--cvmfs", image, "--skip-scan", "--reason", REASON], env)
    return time.monotonic() - start


def repositories(client: RegistryClient, project: str) -> list[str]:
    found: list[str] = []
    path: str | None = "/v2/_catalog?n=1000"
    while path:
        response = client.request("GET", path)
        found += [r for r in response.json().get("repositories") or [] if r.startswith(f"{project}/")]
        match = re.match(r"<([^>]+)>", response.headers.get("link", ""))
        path = match.group(1) if match else None
    return found


def held(profile: Profile) -> dict[tuple[str, str], int]:
    """Every (repository, digest) the bench project holds, manifests and blobs, with its size."""
    sizes: dict[tuple[str, str], int] = {}
    with RegistryClient.from_profile(profile) as client:
        for repo in repositories(client, profile.registry.project):
            pending = list(client.tags(repo))
            while pending:
                manifest = client.find_manifest(repo, pending.pop())
                if manifest is None or (repo, manifest.digest) in sizes:
                    continue
                sizes[repo, manifest.digest] = len(manifest.raw)
                body = manifest.json()
                for blob in [body.get("config") or {}, *(body.get("layers") or [])]:
                    if blob.get("digest"):
                        sizes[repo, blob["digest"]] = int(blob.get("size", 0))
                pending += [entry["digest"] for entry in body.get("manifests") or []]
    return sizes


def pushed(before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]) -> int:
    return sum(size for key, size in after.items() if key not in before)


def cleanup(profile: Profile) -> None:
    """Every manifest of the bench project (its blobs go at the registry's next garbage collection)."""
    with RegistryClient.from_profile(profile) as client:
        for repo in repositories(client, profile.registry.project):
            for digest in {client.manifest_digest(repo, tag) for tag in client.tags(repo)} - {None}:
                client.delete_manifest(repo, str(digest))


def bench_images(docker: str) -> list[str]:
    """The bench's local images: its tags, and untagged images carrying its label or its name."""

    def images(*options: str) -> list[str]:
        command = [docker, "images", "--no-trunc", *options]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()

    tags = [
        tag for tag in images("--format", "{{.Repository}}:{{.Tag}}") if tag.split(":")[0] in (NAME, NAIVE)
    ]
    labelled = images("--quiet", "--filter", f"label={BENCH_LABEL}")
    titled = images("--quiet", "--filter", f"label=org.opencontainers.image.title={NAME}")
    return sorted({*tags, *labelled, *titled})


def main() -> int:
    profile = load_profile().profile
    project = f"imagekit-bench-{uuid.uuid4().hex[:8]}"
    profile.registry.project = project
    docker = profile.engine.docker
    with tempfile.TemporaryDirectory(prefix="imagekit-bench-release-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        profile.cvmfs.backend = "local"
        profile.cvmfs.root = str(work / "cvmfs")
        env = {
            **os.environ,
            "IMAGEKIT_REGISTRY_PROJECT": project,
            "IMAGEKIT_CVMFS_BACKEND": "local",
            "IMAGEKIT_CVMFS_ROOT": profile.cvmfs.root,
            "IMAGEKIT_SCAN_VULNERABILITY_DB": "when-available",
        }
        directory = make_processor(work)
        release = [IMAGEKIT, "release", str(directory), "--reports", str(work / "scans")]
        try:
            loads = [load()]
            first, _ = timed(release, env)
            context = naive_context(directory, profile)  # from 1.0.0's files, before the fix
            change_code(directory)
            before = held(profile)
            loads.append(load())
            code_only, summary = timed(release, env)
            ours = pushed(before, held(profile))
            loads.append(load())
            again, _ = timed(release, env)
            loads.append(load())
            naive_first = naive_release(profile, context, "1.0.0", env, work)
            module = Path("python", "cdr_regrid", "__init__.py")
            shutil.copyfile(directory / module, context / module)
            before = held(profile)
            loads.append(load())
            naive_code = naive_release(profile, context, "1.0.1", env, work)
            naive_bytes = pushed(before, held(profile))
            loads.append(load())
        finally:
            cleanup(profile)
            images = bench_images(docker)
            if images:
                subprocess.run([docker, "image", "rm", "--force", *images], capture_output=True, check=False)
    mb = 1e6
    print(f"release bench: {EXAMPLE.name} as {NAME}, registry {profile.registry.url}/{project}, local CVMFS")
    print(f"load average (1 min) before each release: {', '.join(loads)} on {os.cpu_count()} cores")
    print(f"{'':44}{'imagekit':>12}{'naive':>12}{'ratio':>10}")
    print(f"{'first release, 1.0.0 (s)':44}{first:12.1f}{naive_first:12.1f}")
    print(
        f"{'code-only release, 1.0.1 (s, target < 60)':44}{code_only:12.1f}{naive_code:12.1f}"
        f"{code_only / naive_code:10.1%}"
    )
    print(
        f"{'bytes pushed by it (MB, target <= 5%)':44}{ours / mb:12.2f}{naive_bytes / mb:12.2f}"
        f"{ours / max(naive_bytes, 1):10.2%}"
    )
    print(f"{'release again, unchanged (s)':44}{again:12.1f}")
    print(f"the code-only release's own summary:\n{summary.rstrip()}")
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"(release bench took {time.monotonic() - started:.0f} s)")
    sys.exit(code)

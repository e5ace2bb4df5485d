"""Push of a code-only change, imagekit's layered image against the naive single-COPY one, and the
time of a promote and a rollback, all against the local registry in one run.

The rebuild bench's processor (2 x 110 MB of COTS, ~1 MB of code) is built and pushed as 1.0.0, then
changed by one line and pushed as 1.0.1: the bytes that second push uploads are what a scientist's fix
costs. The naive image (`COPY . /opt/processor` first) goes through the same two pushes. Scans are
skipped with a recorded reason (the bench measures the registry, not Trivy), so channels are `dev`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rebuild import NAIVE_DOCKERFILE, change_code, make_processor

from imagekit.catalog import resolve_base
from imagekit.config import Profile, load_profile
from imagekit.pipeline import build_processor
from imagekit.registry import RegistryClient, promote, push, rollback

REASON = "benchmark: measures the registry, not the scanner"


def bump(directory: Path) -> None:
    manifest = directory / "processor.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.1"))


def ours(profile: Profile, directory: Path) -> dict[str, float]:
    build_processor(directory, profile, on_line=lambda _line: None)
    first = push("bench-proc:1.0.0", profile, skip_reason=REASON)
    change_code(directory)
    bump(directory)
    build_processor(directory, profile, on_line=lambda _line: None)
    second = push("bench-proc:1.0.1", profile, skip_reason=REASON)
    promote(profile, "bench-proc", "1.0.0", "dev")
    promoted = promote(profile, "bench-proc", "1.0.1", "dev")
    rolled = rollback(profile, "bench-proc", "dev")
    return {
        "cold bytes": first.uploaded_bytes,
        "bytes": second.uploaded_bytes,
        "seconds": second.seconds,
        "promote": promoted.seconds,
        "rollback": rolled.seconds,
    }


def naive(profile: Profile, directory: Path) -> dict[str, float]:
    docker = profile.engine.docker
    context = directory.parent / "naive"
    shutil.copytree(directory, context, ignore=shutil.ignore_patterns(".imagekit"))
    base = resolve_base("debian-12", profile.data_dir).pinned
    (context / "Dockerfile").write_text(NAIVE_DOCKERFILE.format(base=base))
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    results = []
    for version in ("1.0.0", "1.0.1"):
        if version == "1.0.1":
            change_code(context)
        command = [docker, "build", "--network", profile.engine.network, "-q", "-t", f"bench-naive:{version}"]
        subprocess.run([*command, str(context)], env=env, check=True, capture_output=True)
        results.append(push(f"bench-naive:{version}", profile, skip_reason=REASON))
    return {"bytes": results[1].uploaded_bytes, "seconds": results[1].seconds}


def cleanup(profile: Profile) -> None:
    with RegistryClient.from_profile(profile) as client:
        for name in ("bench-proc", "bench-proc.history", "bench-naive"):
            repo = f"{profile.registry.project}/{name}"
            for digest in {client.manifest_digest(repo, tag) for tag in client.tags(repo)} - {None}:
                client.delete_manifest(repo, str(digest))


def main() -> int:
    profile = load_profile().profile
    profile.registry.project = f"imagekit-bench-{uuid.uuid4().hex[:8]}"
    docker = profile.engine.docker
    load_before = os.getloadavg()[0]
    tags = ["bench-proc:1.0.0", "bench-proc:1.0.1", "bench-naive:1.0.0", "bench-naive:1.0.1"]
    with tempfile.TemporaryDirectory(prefix="imagekit-bench-push-") as tmp:
        directory = make_processor(Path(tmp))
        try:
            layered, single = ours(profile, directory), naive(profile, directory)
        finally:
            cleanup(profile)
            subprocess.run([docker, "image", "rm", "--force", *tags], capture_output=True, check=False)
    mb = 1e6
    print(f"push bench: code-only change of the rebuild bench's processor, registry {profile.registry.url}")
    print(f"load average (1 min) at the start and the end: {load_before:.1f}, {os.getloadavg()[0]:.1f}")
    print(f"{'':38}{'imagekit':>12}{'naive':>12}{'ratio':>10}")
    print(f"{'first push (MB)':38}{layered['cold bytes'] / mb:12.2f}")
    print(
        f"{'code-only push (MB)':38}{layered['bytes'] / mb:12.2f}{single['bytes'] / mb:12.2f}"
        f"{layered['bytes'] / max(single['bytes'], 1):10.2%}"
    )
    print(f"{'code-only push (s)':38}{layered['seconds']:12.2f}{single['seconds']:12.2f}")
    print(f"{'bytes vs naive (target <= 5%)':38}{layered['bytes'] / max(single['bytes'], 1):12.2%}")
    print(f"{'promote (s, target < 1)':38}{layered['promote']:12.2f}")
    print(f"{'rollback (s, target < 1)':38}{layered['rollback']:12.2f}")
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"(push bench took {time.monotonic() - started:.0f} s)")
    sys.exit(code)

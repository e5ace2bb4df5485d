"""`imagekit release DIR`: validate → render → build → test → scan → push → publish → promote.

Each step is its package's own atomic operation, so stopping at any one leaves nothing half-done:
channels move only in the last step, registry and tree together. Before anything is built, the
registry says whether this version is pushed already, and from which render (a sha256 of the
rendered build context): the same render is not built again, another one is refused (exit 3).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from imagekit import cvmfs, registry
from imagekit.config import Profile
from imagekit.errors import ImagekitError, PolicyError
from imagekit.manifest import load_manifest
from imagekit.pipeline import (
    WORK_DIR,
    build_processor,
    render_processor,
    require_all_passed,
    scan_target,
    smoke_test_processor,
    version_image,
)
from imagekit.release.channels import promote

STEPS = ("validate", "render", "build", "test", "scan", "push", "publish", "promote")
T = TypeVar("T")
OnStep = Callable[[str, str], None]
"""(step, state): state is "running", "done", "skipped" or "failed"."""


@dataclass
class Step:
    name: str
    result: str
    seconds: float
    detail: str = ""


@dataclass
class Released:
    name: str
    version: str
    digest: str = ""
    cvmfs_path: str = ""
    cvmfs_revision: int | None = None
    channel: str = ""
    unchanged: bool = False
    steps: list[Step] = field(default_factory=list)


def render_sha256(context_dir: Path) -> str:
    """Every rendered file's path, executable bit and content: what the build sees."""
    digest = hashlib.sha256()
    for path in sorted(p for p in context_dir.rglob("*") if p.is_file() and not p.is_symlink()):
        executable = path.stat().st_mode & 0o111 != 0
        digest.update(f"{path.relative_to(context_dir)}\0{int(executable)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class _Run:
    def __init__(self, done: Released, log_dir: Path, on_step: OnStep) -> None:
        self.done, self.log_dir, self.on_step = done, log_dir, on_step
        log_dir.mkdir(parents=True, exist_ok=True)

    def log_file(self, step: str) -> Path:
        return self.log_dir / f"{step}.log"

    def logger(self, step: str) -> Callable[[str], None]:
        path = self.log_file(step)
        path.write_text("")

        def write(message: str) -> None:
            with path.open("a", encoding="utf-8") as out:
                out.write(message.rstrip("\n") + "\n")

        return write

    def step(self, name: str, work: Callable[[Callable[[str], None]], T], log: Path | None = None) -> T:
        self.on_step(name, "running")
        start = time.monotonic()
        write = self.logger(name)
        try:
            value = work(write)
        except ImagekitError as failed:
            write(failed.message)
            self.done.steps.append(Step(name, "failed", time.monotonic() - start, failed.message))
            self.on_step(name, "failed")
            where = "" if log and str(log) in failed.message else f" (log: {log or self.log_file(name)})"
            failed.message = (
                f"release stopped at step '{name}': {failed.message}{where}; "
                "no channel moved, no CVMFS symlink changed"
            )
            failed.args = (failed.message,)
            raise
        self.done.steps.append(Step(name, "done", time.monotonic() - start))
        self.on_step(name, "done")
        return value

    def skip(self, name: str, why: str) -> None:
        self.done.steps.append(Step(name, "skipped", 0.0, why))
        self.on_step(name, "skipped")


def release(
    directory: Path, profile: Profile, *, reports_root: Path, on_step: OnStep = lambda _s, _t: None
) -> Released:
    """Take one processor all the way; see the module docstring for what is skipped and refused."""
    manifest = load_manifest(directory)  # a broken manifest fails here, before any log is written
    info = manifest.processor.processor
    done = Released(info.name, info.version)
    run = _Run(done, manifest.directory / WORK_DIR / "release", on_step)
    run.step("validate", lambda log: log(f"{manifest.path}: valid"))
    rendered = run.step("render", lambda log: render_processor(directory, profile)[2])
    ours = render_sha256(rendered.context_dir)
    pushed = registry.pushed_render(profile, info.name, info.version)
    where = f"{profile.registry.url}/{registry.repository(profile, info.name)}:{info.version}"
    if pushed is not None and pushed[1] and pushed[1] != ours:
        raise PolicyError(
            f"{where} is already pushed as {pushed[0]} from another render (sha256 {pushed[1][:12]}, this "
            f"one {ours[:12]}): versions are immutable; nothing was built",
            hint="give the processor a new version in processor.yaml and release again",
        )
    same = pushed is not None and pushed[1] == ours
    image = version_image(manifest)
    if same:
        assert pushed is not None
        done.digest = pushed[0]
        for step in ("build", "test", "scan", "push"):
            run.skip(step, f"{where} is pushed from this render")
    else:
        run.step(
            "build",
            lambda log: build_processor(directory, profile, on_line=log),
            manifest.directory / WORK_DIR / "build.log",
        )

        def smoke(log: Callable[[str], None]) -> None:
            _, outcomes = smoke_test_processor(directory, profile)
            for outcome in outcomes:
                log(f"{'PASS' if outcome.passed else 'FAIL'} {outcome.test.name}: {outcome.reason}")
                log(outcome.stdout + outcome.stderr)
            require_all_passed(image, outcomes)

        run.step("test", smoke)
        run.step(
            "scan", lambda log: log(scan_target(str(directory), profile, reports_root=reports_root).status)
        )
        pushed_now = run.step(
            "push", lambda log: registry.push(image, profile, reports_root=reports_root, log=log)
        )
        done.digest = pushed_now.digest
        registry.record_render(profile, info.name, pushed_now.digest, ours)
    channel = profile.release.channels[0]
    noop = True
    if not manifest.processor.publish.cvmfs:
        run.skip("publish", "publish.cvmfs is false in processor.yaml")
    else:
        ref = f"{info.name}:{info.version}"
        published = run.step("publish", lambda log: cvmfs.publish(profile, ref, log=log))
        noop = published.noop
        done.cvmfs_revision = published.publication.revision
        done.cvmfs_path = str(cvmfs.backend_for(profile).root / published.publication.ref)
    if same and noop:
        done.unchanged = True
        run.skip("promote", "unchanged: channels left as they are")
        return done
    run.step("promote", lambda log: promote(profile, info.name, info.version, channel, log=log))
    done.channel = channel
    return done

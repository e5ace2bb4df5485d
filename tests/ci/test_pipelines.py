"""Generated pipelines run end to end by gitlab-ci-local (shell executor, the central template included
with `include: local`), in a git repository with a real history, against the real engine and registry.

gitlab-ci-local does not set CI_COMMIT_TAG from git nor know merge requests: the tests pass what GitLab
would set with --variable, and unset CI_COMMIT_BRANCH where GitLab has none. It evaluates `changes:`
against origin/<default branch>, so the first commit is pushed to a local bare origin and the second is
not. Every job runs as the template says, on buildah (its default) with the registry layer cache:
validate, build, test, scan, push and promote on the default branch; release (a re-tag of the scanned
digest) and publish to a CVMFS tree of the test's own on a tag. Each pipeline runs on a buildah storage
of its own that starts empty, as a fresh CI runner's does, and is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagekit.config import Profile, load_profile
from imagekit.cvmfs.publish import published
from imagekit.devenv import citools
from imagekit.registry import RegistryClient, read_scan

SECRET = f"known-secret-{uuid.uuid4().hex}"
VENV_BIN = Path(sys.executable).parent
PREDEFINED = "CI_PIPELINE_SOURCE,CI_COMMIT_TAG,CI_COMMIT_BRANCH,CI_COMMIT_REF_NAME"

MANIFEST = """schema_version: 1
processor:
  name: {name}
  version: "1.0.0"
  description: gitlab-ci-local test processor
  maintainers: ["CI Test <ci@example.org>"]
  licenses: [Apache-2.0]
base:
  profile: debian-12
app:
  copy:
    - {{from: bin/, to: /opt/processor/bin/}}
runtime:
  env:
    PATH: /opt/processor/bin:$PATH
  entrypoint: [hello]
tests:
  - name: hello
    run: [hello]
    expect_stdout: hello from {name}
"""


@dataclass
class Run:
    code: int
    output: str
    logs: str
    """Every raw job log gitlab-ci-local wrote in this run, concatenated: what a secret must never be in."""


@dataclass
class Runner:
    """A buildah storage of the test's own: empty at first, as a fresh CI runner's is."""

    root: Path
    buildah: list[str]

    @classmethod
    def fresh(cls, root: Path, profile: Profile) -> Runner:
        root.mkdir(parents=True)
        driver = profile.engine.storage_driver
        (root / "storage.conf").write_text(
            f'[storage]\ndriver = "{driver}"\ngraphroot = "{root / "root"}"\nrunroot = "{root / "run"}"\n'
        )
        return cls(root, [profile.engine.buildah, "--storage-driver", driver])

    @property
    def env(self) -> dict[str, str]:
        return {"CONTAINERS_STORAGE_CONF": str(self.root / "storage.conf")}

    def _buildah(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.buildah, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=False,
        )

    def diff_ids(self, reference: str) -> list[str] | None:
        """The image's layers (diff ids), None when the runner has no such image."""
        found = self._buildah("inspect", "--type", "image", reference)
        return (
            list(json.loads(found.stdout)["OCIv1"]["rootfs"]["diff_ids"]) if found.returncode == 0 else None
        )

    def discard(self) -> None:
        self._buildah("rm", "--all")
        self._buildah("rmi", "--all", "--force")
        overlay = self.root / "root" / "overlay"
        if overlay.is_dir():
            subprocess.run(["umount", str(overlay)], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Repo:
    path: Path
    gitlab_ci_local: Path
    runner: Runner
    site: dict[str, str]
    """The site's CI variables: this test's registry project and CVMFS tree."""

    def git(self, *args: str) -> str:
        result = subprocess.run(
            [
                "git",
                "-c",
                "user.name=CI Test",
                "-c",
                "user.email=ci@example.org",
                "-C",
                str(self.path),
                *args,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()

    def _command(self, *args: str, variables: dict[str, str], unset: tuple[str, ...]) -> list[str]:
        command = [str(self.gitlab_ci_local), "--force-shell-executor", "--no-color"]
        command += ["--ignore-predefined-vars", PREDEFINED]
        for name, value in variables.items():
            command += ["--variable", f"{name}={value}"]
        for name in unset:
            command += ["--unset-variable", name]
        return [*command, *args]

    def jobs(self, *, variables: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> dict[str, str]:
        """Job name -> when, as the rules decide for this kind of pipeline."""
        listed = subprocess.run(
            self._command("--list-json", variables=variables or {}, unset=unset),
            cwd=self.path,
            capture_output=True,
            text=True,
            check=True,
            env=self.env(),
        )
        return {job["name"]: job["when"] for job in json.loads(listed.stdout)}

    def run(
        self,
        *jobs: str,
        variables: dict[str, str] | None = None,
        unset: tuple[str, ...] = (),
    ) -> Run:
        site = {
            "IMAGEKIT_SCAN_VULNERABILITY_DB": "when-available",
            "IMAGEKIT_REGISTRY_USERNAME": "ci-robot",
            "IMAGEKIT_REGISTRY_PASSWORD": SECRET,
            **self.site,
        }
        shutil.rmtree(self.path / ".gitlab-ci-local" / "output", ignore_errors=True)  # this run's logs only
        result = subprocess.run(
            self._command(*jobs, variables={**site, **(variables or {})}, unset=unset),
            cwd=self.path,
            capture_output=True,
            text=True,
            check=False,
            env=self.env(),
            timeout=1500,
        )
        logs = "".join(
            log.read_text(errors="replace") for log in sorted((self.path / ".gitlab-ci-local").rglob("*.log"))
        )
        return Run(result.returncode, result.stdout + result.stderr, logs)

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.runner.env, "COLUMNS": "250", "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}

    def add_processor(self, name: str, manifest: str = MANIFEST) -> None:
        directory = self.path / "processors" / name
        (directory / "bin").mkdir(parents=True)
        (directory / "processor.yaml").write_text(manifest.format(name=name))
        hello = directory / "bin" / "hello"
        hello.write_text(f"#!/bin/sh\necho hello from {name}\n")
        hello.chmod(0o755)

    def change(self, name: str, message: str) -> str:
        with (self.path / "processors" / name / "bin" / "hello").open("a") as script:
            script.write(f"# {message}\n")
        self.git("commit", "-q", "-am", message)
        return self.git("rev-parse", "HEAD")[:12]

    def render(self, target: str) -> None:
        subprocess.run(
            [str(VENV_BIN / "imagekit"), "ci", "render", target, "--local", "ci/imagekit.yml"],
            cwd=self.path,
            check=True,
            capture_output=True,
            env=self.env(),
        )

    def image_exists(self, reference: str) -> bool:
        return self.runner.diff_ids(reference) is not None

    def job_log(self, job: str) -> str:
        """The raw log gitlab-ci-local wrote for the last run of `job`."""
        return (self.path / ".gitlab-ci-local" / "output" / f"{job}.log").read_text(errors="replace")


@pytest.fixture(scope="session")
def gitlab_ci_local(site_profile: Profile, local_env: dict[str, object]) -> Path:
    """dev up (local_env) installs Node and the pinned gitlab-ci-local; the wrapper must answer."""
    wrapper = citools.wrapper(site_profile.data_dir)
    answered = subprocess.run([str(wrapper), "--version"], capture_output=True, text=True, check=False)
    assert answered.stdout.strip() == citools.GITLAB_CI_LOCAL_VERSION, answered.stderr
    return wrapper


@pytest.fixture
def site(site_profile: Profile, test_project: str, tmp_path: Path) -> dict[str, str]:
    """The CI variables a site sets, with this test's own registry project and CVMFS tree."""
    return {
        "IMAGEKIT_REGISTRY_URL": site_profile.registry.url,
        "IMAGEKIT_REGISTRY_PROJECT": test_project,
        "IMAGEKIT_CVMFS_BACKEND": "local",
        "IMAGEKIT_CVMFS_ROOT": str(tmp_path / "cvmfs"),
    }


MakeRepo = Callable[..., tuple[Repo, list[str]]]


@pytest.fixture
def make_repo(
    tmp_path: Path,
    gitlab_ci_local: Path,
    site_profile: Profile,
    site: dict[str, str],
) -> Iterator[MakeRepo]:
    """`make_repo(processors)`: a repository whose first commit (the processors and the generated
    pipeline) is on origin/main, run on a fresh runner; returns it and the processors' unique names."""
    runner = Runner.fresh(tmp_path / "runner", site_profile)

    def make(processors: list[str], manifest: str = MANIFEST) -> tuple[Repo, list[str]]:
        origin = tmp_path / "origin.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
        path = tmp_path / "repo"
        subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
        repo = Repo(path, gitlab_ci_local, runner, site)
        names = [f"{kind}-{uuid.uuid4().hex[:6]}" for kind in processors]
        for name in names:
            repo.add_processor(name, manifest)
        repo.render("processors" if len(names) > 1 else f"processors/{names[0]}")
        (path / ".gitignore").write_text(".gitlab-ci-local/\nimagekit-scans/\n.imagekit/\n")
        repo.git("add", "-A")
        repo.git("commit", "-q", "-m", "first")
        repo.git("remote", "add", "origin", str(origin))
        repo.git("remote", "add", "gcl-origin", "https://gitlab.example.org/eo/processors.git")
        repo.git("push", "-q", "origin", "main")
        repo.git("remote", "set-head", "origin", "main")
        return repo, names

    try:
        yield make
    finally:
        runner.discard()


MR = {"CI_PIPELINE_SOURCE": "merge_request_event"}


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.buildah
def test_merge_request_pipeline_validates_builds_tests_and_scans(
    make_repo: MakeRepo,
) -> None:
    repo, (name,) = make_repo(["mr"])
    repo.git("checkout", "-q", "-b", "feature")
    short = repo.change(name, "a code change")
    jobs = repo.jobs(variables=MR, unset=("CI_COMMIT_BRANCH",))
    running = {job for job, when in jobs.items() if when == "on_success"}
    assert running == {"validate", "build", "test", "scan"}
    assert jobs["push"] == jobs["publish"] == jobs["promote-first-channel"] == "never"
    run = repo.run(variables=MR, unset=("CI_COMMIT_BRANCH",))
    assert run.code == 0, run.output[-3000:]
    for job in ("validate", "build", "test", "scan"):
        assert f"PASS  {job}" in run.output
    assert "PASS hello: ok" in run.output
    assert repo.image_exists(f"{name}:git-{short}")
    assert list((repo.path / "imagekit-scans" / name / "1.0.0").iterdir()), "scan reports kept as artifacts"
    assert "IMAGEKIT_REGISTRY_PASSWORD (set, value never shown)" in run.logs
    assert SECRET not in run.logs and SECRET not in run.output


def _profile(site: dict[str, str]) -> Profile:
    """The profile the pipeline's jobs ran with."""
    inherited = {k: v for k, v in os.environ.items() if k != "IMAGEKIT_PROFILE"}
    return load_profile(env={**inherited, **site}).profile


def _registry(site: dict[str, str]) -> RegistryClient:
    return RegistryClient.from_profile(_profile(site))


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.buildah
def test_branch_pipeline_pushes_and_promotes_then_the_tag_pipeline_releases_that_digest_to_cvmfs(
    make_repo: MakeRepo, site: dict[str, str], tmp_path: Path
) -> None:
    repo, (name,) = make_repo(["rel"])
    short = repo.change(name, "merged to main")
    jobs = repo.jobs()
    branch_jobs = {"validate", "build", "test", "scan", "push", "promote-first-channel"}
    assert {job for job, when in jobs.items() if when == "on_success"} == branch_jobs
    assert jobs["rollback"] == "manual"
    assert jobs["release"] == jobs["publish"] == "never"

    branch = repo.run()
    assert branch.code == 0, branch.output[-3000:]
    for job in branch_jobs:
        assert f"PASS  {job}" in branch.output
    repo_name = f"{site['IMAGEKIT_REGISTRY_PROJECT']}/{name}"
    with _registry(site) as registry:
        scanned = registry.manifest_digest(repo_name, f"git-{short}")
        assert scanned, f"git-{short} was pushed"
        config_digest = registry.manifest(repo_name, f"git-{short}").json()["config"]["digest"]
        with registry.blob(repo_name, config_digest) as stream:
            pushed_layers = json.loads(stream.read())["rootfs"]["diff_ids"]
        assert registry.manifest_digest(repo_name, "dev") == scanned, "promoted to the first channel"
        assert registry.manifest_digest(repo_name, "1.0.0") is None, "the branch pushes git-<sha> only"
        assert read_scan(registry, repo_name, scanned).status == "passed, vulnerabilities not checked"
    assert repo.runner.diff_ids(f"{name}:git-{short}") == pushed_layers, (
        "the image the branch built and scanned"
    )

    repo.git("tag", "v1.0.0")
    tag = {"CI_COMMIT_TAG": "v1.0.0", "CI_COMMIT_REF_NAME": "v1.0.0"}
    jobs = repo.jobs(variables=tag, unset=("CI_COMMIT_BRANCH",))
    release_jobs = {"validate", "release-tag", "release", "publish"}
    assert {job for job, when in jobs.items() if when == "on_success"} == release_jobs
    assert jobs["build"] == jobs["test"] == jobs["scan"] == "never", "a release re-tags, never rebuilds"
    assert jobs["promote-last-channel"] == "manual"
    released = repo.run(variables=tag, unset=("CI_COMMIT_BRANCH",))
    assert released.code == 0, released.output[-3000:]
    assert f"is now git-{short} ({scanned}): nothing built or uploaded" in released.output
    logged = {log.stem for log in (repo.path / ".gitlab-ci-local" / "output").glob("*.log")}
    assert logged == release_jobs and "STEP" not in released.logs, "no build ran in the tag pipeline"
    with _registry(site) as registry:
        assert registry.manifest_digest(repo_name, "1.0.0") == scanned
    pulled = subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false",
         f"docker://{site['IMAGEKIT_REGISTRY_URL']}/{repo_name}:1.0.0", f"oci:{tmp_path / 'pulled'}:1.0.0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    index = json.loads((tmp_path / "pulled" / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [scanned], "pullable by its version, same digest"
    publication = published(_profile(site), repo_name, "1.0.0")
    assert publication is not None, "the version's tree is on CVMFS"
    assert publication.manifest_digest == scanned
    hello = list((Path(site["IMAGEKIT_CVMFS_ROOT"]) / ".flat").glob("**/opt/processor/bin/hello"))
    assert hello and f"hello from {name}" in hello[0].read_text()
    verified = subprocess.run(
        [str(VENV_BIN / "imagekit"), "cvmfs", "verify", f"{name}:1.0.0"],
        capture_output=True, text=True, check=False, env={**repo.env(), **site},
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert SECRET not in branch.logs + released.logs and SECRET not in branch.output + released.output

    wrong = {"CI_COMMIT_TAG": "v2.0.0", "CI_COMMIT_REF_NAME": "v2.0.0"}
    bad = repo.run("release-tag", variables=wrong, unset=("CI_COMMIT_BRANCH",))
    assert bad.code != 0
    assert "release tag v2.0.0 does not match processor.version 1.0.0" in bad.output


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.buildah
def test_several_processors_build_only_the_one_that_changed(
    make_repo: MakeRepo,
) -> None:
    repo, (changed, untouched) = make_repo(["changed", "untouched"])
    repo.git("checkout", "-q", "-b", "feature")
    short = repo.change(changed, "only this one")
    assert repo.git("log", "--format=%s").splitlines() == ["only this one", "first"]
    jobs = repo.jobs(variables=MR, unset=("CI_COMMIT_BRANCH",))
    running = {job for job, when in jobs.items() if when == "on_success"}
    assert running == {f"{changed}:{job}" for job in ("validate", "build", "test", "scan")}
    assert all(when == "never" for job, when in jobs.items() if job.startswith(f"{untouched}:"))
    run = repo.run(variables=MR, unset=("CI_COMMIT_BRANCH",))
    assert run.code == 0, run.output[-3000:]
    assert repo.image_exists(f"{changed}:git-{short}")
    assert not repo.image_exists(f"{untouched}:1.0.0")
    tagged = {"CI_COMMIT_TAG": f"{untouched}/v1.0.0"}
    jobs = repo.jobs(variables=tagged, unset=("CI_COMMIT_BRANCH",))
    assert {job for job, when in jobs.items() if when == "on_success"} == {
        f"{untouched}:{job}" for job in ("validate", "release-tag", "release", "publish")
    }


REUSE_MANIFEST = MANIFEST.replace("app:\n", "system_packages:\n  runtime: [bzip2]\napp:\n")
_STEP = re.compile(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: (.*)$")
_UPLOAD = re.compile(r"uploading sha256:[0-9a-f]+ \((\d+) bytes\)")


def _layer_steps(build_log: str) -> list[tuple[str, str]]:
    """(instruction, "cache" | "built") per buildah step that makes a layer (RUN, COPY, ADD): taken from
    the cache, or run and its result pushed to the cache."""
    steps: list[tuple[str, str]] = []
    for line in build_log.splitlines():
        if step := _STEP.match(line):
            steps.append((step.group(1), "pending"))
        elif steps and line.startswith("--> Using cache"):
            steps[-1] = (steps[-1][0], "cache")
        elif steps and line.startswith("--> Pushing cache"):
            steps[-1] = (steps[-1][0], "built")
    return [step for step in steps if step[0].split()[0] in {"RUN", "COPY", "ADD"} and step[1] != "pending"]


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.buildah
def test_a_code_only_commit_on_a_fresh_runner_rebuilds_and_pushes_only_the_app_layer(
    make_repo: MakeRepo, site: dict[str, str], site_profile: Profile, tmp_path: Path
) -> None:
    repo, (name,) = make_repo(["reuse"], REUSE_MANIFEST)
    branch_jobs = ("validate", "build", "test", "scan", "push")

    def fresh_runner(label: str) -> tuple[Run, str, list[int]]:
        """The default branch's jobs up to push on a runner whose storage starts empty and is deleted
        afterwards: the run, the build log and the sizes of the blobs `imagekit push` uploaded."""
        used, repo.runner = repo.runner, Runner.fresh(tmp_path / f"runner-{label}", site_profile)
        try:
            run = repo.run(*branch_jobs)
            assert run.code == 0, run.output[-3000:]
            logs = [log.read_text() for log in repo.path.rglob(f"processors/{name}/.imagekit/build.log")]
            assert len(logs) == 1, "one build log"
            uploads = [int(size) for size in _UPLOAD.findall(repo.job_log("push"))]
        finally:
            repo.runner.discard()
            repo.runner = used
        return run, logs[0], uploads

    repo.change(name, "a first change on main")
    _, first_log, first_uploads = fresh_runner("first")
    first = _layer_steps(first_log)
    assert first and all(state == "built" for _, state in first), first_log[-2000:]
    apt_layer = max(first_uploads)
    repo.change(name, "a code-only change")
    second_run, second_log, second_uploads = fresh_runner("second")
    second = _layer_steps(second_log)
    assert [step for step, _ in second] == [step for step, _ in first], "the same steps"
    rebuilt = [step for step, state in second if state == "built"]
    assert rebuilt == [step for step, _ in second if step.startswith("COPY bin/")], second
    assert any(step.startswith("RUN apt-get") and state == "cache" for step, state in second), second
    print(
        f"layer reuse: {len(rebuilt)} of {len(second)} layers rebuilt; imagekit push uploaded "
        f"{len(second_uploads)} blobs ({sum(second_uploads)} bytes) against {len(first_uploads)} "
        f"({sum(first_uploads)} bytes) on the first runner; largest layer {apt_layer} bytes"
    )
    assert len(second_uploads) == 2, "the app layer and the image config, nothing else"
    assert sum(second_uploads) < apt_layer / 10, "the system-package layer was not pushed again"
    assert "PASS hello: ok" in second_run.output

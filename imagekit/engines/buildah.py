"""buildah: daemonless builds for CI runners and hosts without a Docker daemon.

Builds use chroot isolation, which works as root without user namespaces, on overlay storage where
the kernel allows it and vfs anywhere else (`engine.storage_driver`). Smoke tests use OCI isolation
(the runtime `runtime.py` chose for the host's cgroup layout), since chroot isolation cannot cut the
network. `--timestamp` (from SOURCE_DATE_EPOCH) clamps
every time in the image, so rebuilds from clean storage give the same digest. A build's pulls (the
base) and the registry cache (`--cache-from`/`--cache-to`) get the profile's registry credentials as
push does, through an auth file of the build's own (0600, deleted afterwards), never on a command
line or in a log.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from imagekit.engines.base import (
    BuildTranscript,
    BuiltImage,
    Layer,
    LogSink,
    RunResult,
    export_failed,
    full_id,
    not_there,
    pulls_over_plain_http,
)
from imagekit.engines.runtime import ContainerRuntime
from imagekit.errors import MissingPartError, ToolError


@dataclass(frozen=True)
class RegistryLogin:
    """Credentials for the site's registry (bases, cache); the names say where they came from."""

    host: str
    names: str
    """The variables they were read from, e.g. "IMAGEKIT_REGISTRY_USERNAME and ..._PASSWORD"."""
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @property
    def present(self) -> bool:
        return bool(self.username and self.password)


@contextmanager
def _authfile(login: RegistryLogin | None) -> Iterator[list[str]]:
    """`--authfile PATH` for the duration of one build (none without credentials): a containers
    auth.json readable by its owner only, deleted however the build ends."""
    if login is None or not login.present:
        yield []
        return
    fd, path = tempfile.mkstemp(prefix="imagekit-auth-", suffix=".json")  # mode 0600
    try:
        pair = base64.b64encode(f"{login.username}:{login.password}".encode()).decode()
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"auths": {login.host: {"auth": pair}}}, out)
        yield ["--authfile", path]
    finally:
        Path(path).unlink(missing_ok=True)


class BuildahEngine:
    name = "buildah"

    def __init__(
        self,
        binary: str,
        *,
        network: str,
        storage_driver: str,
        storage_root: Path | None,
        insecure_registries: list[str],
        runtime: ContainerRuntime,
        cache_repository: str | None = None,
        registry_login: RegistryLogin | None = None,
    ) -> None:
        self.binary = binary
        self.cache_repository = cache_repository
        """`<registry>/<project>`: builds pull and push their layers at `<it>/<name>/cache`."""
        self.registry_login = registry_login
        self.network = network
        self.storage_driver = storage_driver
        self.storage_root = storage_root
        self.insecure_registries = insecure_registries
        self.runtime = runtime

    def _missing(self) -> MissingPartError:
        return MissingPartError(self.binary, "apt-get install -y buildah (or set engine.buildah_binary)")

    def _base(self) -> list[str]:
        command = [
            self.binary, "--storage-driver", self.storage_driver,
            "--cgroup-manager", self.runtime.cgroup_manager,
        ]  # fmt: skip
        if self.storage_root is not None:
            command += [
                "--root",
                str(self.storage_root / "root"),
                "--runroot",
                str(self.storage_root / "run"),
            ]
        return command

    def _run(self, args: list[str], *, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*self._base(), *args], capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError as exc:
            raise self._missing() from exc

    def build(
        self,
        context: Path,
        tags: list[str],
        *,
        log_file: Path,
        on_line: LogSink,
        source_date_epoch: int | None,
        no_cache: bool = False,
    ) -> BuiltImage:
        command = [
            *self._base(), "bud", "--isolation", "chroot", "--runtime", self.runtime.runtime,
            "--layers", "--force-rm", "--network", self.network, "--file", str(context / "Dockerfile"),
        ]  # fmt: skip
        if pulls_over_plain_http(context / "Dockerfile", self.insecure_registries):
            command.append("--tls-verify=false")
        if source_date_epoch is not None:
            command += ["--timestamp", str(source_date_epoch)]
        if no_cache:
            command.append("--no-cache")
        elif self.cache_repository is not None:
            cache = f"{self.cache_repository}/{tags[0].split(':')[0]}/cache"
            command += ["--cache-from", cache, "--cache-to", cache]
            insecure = any(cache.startswith(r + "/") for r in self.insecure_registries)
            if insecure and "--tls-verify=false" not in command:
                command.append("--tls-verify=false")
        for tag in tags:
            command += ["--tag", tag]
        transcript = BuildTranscript(log_file, on_line)
        with _authfile(self.registry_login) as auth:
            try:
                process = subprocess.Popen(
                    [*command, *auth, str(context)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            except FileNotFoundError as exc:
                raise self._missing() from exc
            assert process.stdout is not None
            transcript.follow(process.stdout)
            returncode = process.wait()
        if returncode != 0:
            failure = transcript.failure(self.name, f"exit {returncode}")
            login = self.registry_login
            if login is not None and "unauthorized" in "\n".join(transcript.tail):
                said = "refused the credentials in" if login.present else "asks for credentials: set"
                failure.message += f"; the registry {login.host} {said} {login.names}"
                failure.args = (failure.message,)
            raise failure
        return self.describe(tags[0], tags, log_file)

    def inspect(self, image: str) -> dict[str, object]:
        done = self._run(["inspect", "--type", "image", image])
        if done.returncode != 0:
            raise ToolError(f"buildah inspect {image} failed: {done.stderr.strip()}")
        result: dict[str, object] = json.loads(done.stdout)
        return result

    def describe(self, image: str, tags: list[str], log_file: Path) -> BuiltImage:
        info = self.inspect(image)
        oci = info.get("OCIv1", {})
        assert isinstance(oci, dict)
        diff_ids = list(oci.get("rootfs", {}).get("diff_ids", []))
        history = [entry for entry in oci.get("history", []) if not entry.get("empty_layer")]
        layers = [
            Layer(diff_id=diff_id, size=0, created_by=str(entry.get("created_by", "")).strip())
            for diff_id, entry in zip(diff_ids, history, strict=False)
        ]
        return BuiltImage(
            engine=self.name,
            id="sha256:" + str(info.get("FromImageID", "")),
            tags=tags,
            diff_ids=diff_ids,
            layers=layers,
            log_file=log_file,
            digest=str(info.get("FromImageDigest", "")),
        )

    def run(self, image: str, command: list[str], *, user: str, timeout_s: int) -> RunResult:
        name = f"imagekit-smoke-{uuid.uuid4().hex[:12]}"
        created = self._run(["from", "--pull-never", "--name", name, image])
        if created.returncode != 0:
            raise ToolError(f"buildah from {image} failed: {created.stderr.strip()}")
        try:
            argv = [
                *self._base(), "run", "--isolation", "oci", "--runtime", self.runtime.runtime,
                "--network", "none", "--user", user, name, "--", *command,
            ]  # fmt: skip
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
            except subprocess.TimeoutExpired:
                return RunResult(-1, "", "", timed_out=True)
            return RunResult(done.returncode, done.stdout, done.stderr)
        finally:
            self._run(["rm", name])

    def exists(self, image: str) -> bool:
        return self._run(["inspect", "--type", "image", image]).returncode == 0

    def image_id(self, image: str) -> str | None:
        done = self._run(["inspect", "--type", "image", "--format", "{{.FromImageID}}", image])
        if done.returncode == 0:
            return full_id(done.stdout)
        if not_there(done.stderr):
            return None
        raise ToolError(f"buildah inspect {image} failed: {done.stderr.strip() or 'no output'}")

    def export(self, image: str, destination: str) -> None:
        done = self._run(["push", "--quiet", image, destination])
        if done.returncode != 0:
            raise export_failed(self.name, image, [self.binary, "push"], done.stderr)

    def remove(self, images: list[str]) -> None:
        for image in images:
            if self.exists(image):
                self._run(["rmi", "--force", image])

    def discard_storage(self) -> None:
        """Delete a storage of its own (`storage_root`) whole: containers, images, mounts, files."""
        if self.storage_root is None:
            raise ToolError("refusing to discard the shared buildah storage")
        self._run(["rm", "--all"])
        self._run(["rmi", "--all", "--force"])
        overlay = self.storage_root / "root" / "overlay"
        if overlay.is_dir():
            subprocess.run(["umount", str(overlay)], capture_output=True, check=False)
        shutil.rmtree(self.storage_root, ignore_errors=True)

"""Which OCI runtime, cgroup manager and ulimits podman and buildah run containers with on this host.

A Debian 12 host mounts cgroups in one of three layouts: v1 (one hierarchy per controller under
/sys/fs/cgroup), hybrid (v1 controllers plus a cgroup2 hierarchy at /sys/fs/cgroup/unified) or v2
(cgroup2 at /sys/fs/cgroup). crun refuses hybrid hosts ("cgroups in hybrid mode not supported");
runc runs on all three. The choice is passed on every invocation (`--runtime`, `--cgroup-manager`,
`--ulimit`), so imagekit never edits /etc/containers and an operator's own configuration stays as is.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from imagekit.errors import MissingPartError

Layout = Literal["v1", "hybrid", "v2", "none"]
CgroupManager = Literal["systemd", "cgroupfs"]

CGROUP_ROOT = "/sys/fs/cgroup"
# podman's default nofile for a container; above a hard limit the session cannot raise, runc refuses it
PODMAN_DEFAULT_NOFILE = 1_048_576
# buildah's default nproc for RUN; podman lowers its own nproc hard limit to it, so no container may ask more
BUILDAH_DEFAULT_NPROC = 32_768


def cgroup_layout(mountinfo: str) -> Layout:
    """The cgroup layout a mount table (the text of /proc/self/mountinfo) describes."""
    v1 = v2 = False
    for line in mountinfo.splitlines():
        fields, separator, tail = line.partition(" - ")
        if not separator or len(fields.split()) < 5 or not tail.split():
            continue
        mount_point, fstype = fields.split()[4], tail.split()[0]
        if fstype == "cgroup2":
            if mount_point == CGROUP_ROOT:
                return "v2"
            v2 = True
        elif fstype == "cgroup":
            v1 = True
    if v1:
        return "hybrid" if v2 else "v1"
    return "v2" if v2 else "none"


@dataclass(frozen=True)
class HostFacts:
    """What the choice depends on, read from the host once (or written down in a test)."""

    layout: Layout
    runtimes: dict[str, str]
    """Installed OCI runtimes: name ('crun', 'runc') -> path."""
    systemd: bool
    """systemd is the init system (/run/systemd/system exists)."""
    hard_nofile: int
    hard_nproc: int
    pid_max: int


@dataclass(frozen=True)
class ContainerRuntime:
    """How podman and buildah must start containers here, and why; `runtime` empty if they cannot."""

    runtime: str
    cgroup_manager: CgroupManager
    nofile: int
    nproc: int
    why: str
    how_to_fix: str = ""

    @property
    def usable(self) -> bool:
        return bool(self.runtime)

    def summary(self) -> str:
        if not self.usable:
            return f"cannot run containers here: {self.why}"
        name = Path(self.runtime).name
        return (
            f"{name}, cgroup manager {self.cgroup_manager}, ulimits nofile={self.nofile} "
            f"nproc={self.nproc}: {self.why}"
        )

    def require(self, engine: str) -> None:
        """Refuse, with what to do, when the engine cannot run containers on this host."""
        if not self.usable:
            raise MissingPartError(f"an OCI runtime {engine} can use here ({self.why})", self.how_to_fix)

    def ulimit_flags(self) -> list[str]:
        """podman's defaults exceed hard limits a session without CAP_SYS_RESOURCE cannot raise."""
        return [
            "--ulimit",
            f"nofile={self.nofile}:{self.nofile}",
            "--ulimit",
            f"nproc={self.nproc}:{self.nproc}",
        ]


def choose_runtime(facts: HostFacts) -> ContainerRuntime:
    """The OCI runtime and cgroup manager that work in this layout, with the reason in words."""
    manager: CgroupManager = "systemd" if facts.systemd else "cgroupfs"
    manager_why = "systemd is the init system" if facts.systemd else "no systemd to delegate cgroups to"
    nofile = min(facts.hard_nofile, PODMAN_DEFAULT_NOFILE)
    nproc = min(facts.hard_nproc, facts.pid_max, BUILDAH_DEFAULT_NPROC)
    limits_why = "ulimits within the hard limits (raising them needs CAP_SYS_RESOURCE)"

    def chosen(name: str, layout_why: str) -> ContainerRuntime:
        why = f"{layout_why}; {manager_why}; {limits_why}"
        return ContainerRuntime(facts.runtimes[name], manager, nofile, nproc, why)

    def refused(why: str, fix: str) -> ContainerRuntime:
        return ContainerRuntime("", manager, nofile, nproc, why, fix)

    if facts.layout == "none":
        return refused(
            "no cgroup hierarchy is mounted",
            f"mount cgroup2 at {CGROUP_ROOT} (mount -t cgroup2 none {CGROUP_ROOT})",
        )
    if facts.layout == "hybrid":
        if "runc" in facts.runtimes:
            return chosen("runc", "cgroup hybrid layout (v1 controllers + cgroup2), which crun refuses")
        return refused(
            "cgroup hybrid layout (v1 controllers + cgroup2): crun refuses it and runc is not installed",
            "apt-get install -y runc",
        )
    for name in ("crun", "runc"):
        if name in facts.runtimes:
            return chosen(name, f"cgroup {facts.layout} layout, where {name} runs")
    return refused(f"cgroup {facts.layout} layout but no OCI runtime is installed", "apt-get install -y crun")


def _hard_limit(kind: int) -> int:
    hard = resource.getrlimit(kind)[1]
    return sys.maxsize if hard == resource.RLIM_INFINITY else hard


def host_facts() -> HostFacts:
    """Read the mount table, the installed runtimes, the init system and the hard limits."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    except OSError:
        mountinfo = ""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
    runtimes = {name: path for name in ("crun", "runc") if (path := shutil.which(name, path=search))}
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pid_max = BUILDAH_DEFAULT_NPROC
    return HostFacts(
        layout=cgroup_layout(mountinfo),
        runtimes=runtimes,
        systemd=Path("/run/systemd/system").is_dir(),
        hard_nofile=_hard_limit(resource.RLIMIT_NOFILE),
        hard_nproc=_hard_limit(resource.RLIMIT_NPROC),
        pid_max=pid_max,
    )


def host_runtime() -> ContainerRuntime:
    """The choice for this host."""
    return choose_runtime(host_facts())

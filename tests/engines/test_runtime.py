"""The OCI runtime choice for podman and buildah, as data: every cgroup layout Debian 12 can have.

Only one layout can run on a given machine (this one is hybrid); the podman and buildah build and
smoke tests prove the choice there, these prove the detection and the choice for all of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagekit.engines.runtime import HostFacts, cgroup_layout, choose_runtime, host_facts
from imagekit.errors import MissingPartError

# /proc/self/mountinfo excerpts as each layout writes them
V1 = """\
22 28 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 22 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
"""
HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2 = """\
22 28 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""
# v2 inside a container: cgroup2 at /sys/fs/cgroup, plus a cgroup2 bind mount elsewhere
V2_NESTED = V2 + "90 26 0:23 /ci /builds/cgroup rw - cgroup2 cgroup2 rw\n"
NONE = "22 28 0:20 / /sys rw,nosuid - sysfs sysfs rw\n23 22 0:21 / /proc rw - proc proc rw\n"
# optional fields ("shared:7 master:1") before the separator, and a mount point with an escaped space
ODD_FIELDS = "45 31 0:40 / /sys/fs/cgroup/net\\040cls rw shared:7 master:1 - cgroup cgroup rw,net_cls\n"

BOTH = {"crun": "/usr/bin/crun", "runc": "/usr/sbin/runc"}


def facts(layout: str, runtimes: dict[str, str] = BOTH, *, systemd: bool = False, **limits: int) -> HostFacts:
    values = {"hard_nofile": 20_000, "hard_nproc": 96_365, "pid_max": 4_194_304, **limits}
    return HostFacts(layout=layout, runtimes=runtimes, systemd=systemd, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mountinfo", "layout"),
    [
        (V1, "v1"),
        (HYBRID, "hybrid"),
        (V2, "v2"),
        (V2_NESTED, "v2"),
        (NONE, "none"),
        (ODD_FIELDS, "v1"),
        ("", "none"),
    ],
)
def test_layout_is_read_from_the_mount_table(mountinfo: str, layout: str) -> None:
    assert cgroup_layout(mountinfo) == layout


def test_hybrid_uses_runc_because_crun_refuses_it() -> None:
    chosen = choose_runtime(facts("hybrid"))
    assert chosen.usable and chosen.runtime == "/usr/sbin/runc"
    assert "hybrid" in chosen.why and "crun" in chosen.why


def test_hybrid_without_runc_cannot_run_containers_and_says_how_to_fix() -> None:
    chosen = choose_runtime(facts("hybrid", {"crun": "/usr/bin/crun"}))
    assert not chosen.usable
    assert chosen.summary().startswith("cannot run containers here: cgroup hybrid layout")
    assert chosen.how_to_fix == "apt-get install -y runc"
    with pytest.raises(MissingPartError, match="apt-get install -y runc"):
        chosen.require("podman")


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_v1_and_v2_prefer_crun_and_fall_back_to_runc(layout: str) -> None:
    assert choose_runtime(facts(layout)).runtime == "/usr/bin/crun"
    assert choose_runtime(facts(layout, {"runc": "/usr/sbin/runc"})).runtime == "/usr/sbin/runc"
    nothing = choose_runtime(facts(layout, {}))
    assert not nothing.usable and nothing.how_to_fix == "apt-get install -y crun"


def test_no_cgroups_mounted_cannot_run_containers() -> None:
    chosen = choose_runtime(facts("none"))
    assert not chosen.usable and "mount -t cgroup2" in chosen.how_to_fix


@pytest.mark.parametrize(("systemd", "manager"), [(True, "systemd"), (False, "cgroupfs")])
def test_cgroup_manager_follows_the_init_system(systemd: bool, manager: str) -> None:
    for layout in ("v1", "hybrid", "v2"):
        assert choose_runtime(facts(layout, systemd=systemd)).cgroup_manager == manager


def test_ulimits_never_exceed_the_hard_limits() -> None:
    """A session without CAP_SYS_RESOURCE cannot raise them: runc refuses podman's defaults."""
    low = choose_runtime(facts("hybrid", hard_nofile=20_000, hard_nproc=4_000))
    assert (low.nofile, low.nproc) == (20_000, 4_000)
    assert low.ulimit_flags() == ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4000:4000"]
    high = choose_runtime(facts("v2", hard_nofile=10**9, hard_nproc=10**9, pid_max=4_194_304))
    assert (high.nofile, high.nproc) == (1_048_576, 32_768)
    small_pid_max = choose_runtime(facts("v1", hard_nproc=10**9, pid_max=12_000))
    assert small_pid_max.nproc == 12_000


def test_this_host_is_read_from_its_own_mount_table() -> None:
    here = host_facts()
    assert here.layout == cgroup_layout(Path("/proc/self/mountinfo").read_text(encoding="utf-8"))
    assert here.hard_nofile > 0 and here.hard_nproc > 0 and here.pid_max > 0


@pytest.mark.parametrize("engine", ["podman", "buildah"])
def test_doctor_says_which_runtime_and_why(engine: str) -> None:
    chosen = choose_runtime(host_facts())
    doctor = subprocess.run(
        [sys.executable, "-m", "imagekit.cli", "--engine", engine, "doctor"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
        timeout=120,
        check=False,
    )
    row = next(line for line in doctor.stdout.splitlines() if "OCI runtime (podman, buildah)" in line)
    assert chosen.summary() in row
    assert ("ok" in row) == chosen.usable
    if not chosen.usable:
        assert doctor.returncode == 1 and chosen.how_to_fix in doctor.stderr

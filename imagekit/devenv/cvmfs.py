"""`dev up` with `cvmfs.backend = "cvmfs_server"`: cvmfs-server and the repository imagekit publishes to.

Debian has no cvmfs-server package: it comes from CERN's apt repository, which the site configures
(imagekit never adds an apt source). The repository is created with the settings imagekit expects
(cvmfs/README.md) only when `cvmfs_server list` does not name it; an existing one is left as it is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from imagekit.config import CvmfsSettings, Profile
from imagekit.cvmfs.backends import CvmfsServerBackend, ensure_web_server, web_server_running
from imagekit.devenv.services import Log
from imagekit.errors import MissingPartError, ToolError

PACKAGE = "cvmfs-server"
MKFS_OPTIONS = ("-o", "root", "-z", "-g")  # owner root, garbage collection on, no automatic tags
SETTINGS = {
    "CVMFS_AUTOCATALOGS": "false",
    "CVMFS_GARBAGE_COLLECTION": "true",
    "CVMFS_AUTO_TAG": "false",
    "CVMFS_IGNORE_XDIR_HARDLINKS": "true",
    "CVMFS_INCLUDE_XATTRS": "true",
}
REPOSITORIES_D = Path("/etc/cvmfs/repositories.d")
HOW_TO_GET = (
    f"apt has no {PACKAGE} package: configure CERN's CVMFS apt repository in /etc/apt/sources.list.d "
    "(install the cvmfs-release package from CERN's CVMFS download page, or add its deb line with its "
    f"signing key), run apt-get update, then `imagekit dev up` again (it installs {PACKAGE} and creates "
    "the repository); see cvmfs/README.md"
)
_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
_LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=120")


def server_binary(profile: Profile) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/usr/sbin"])
    return shutil.which(profile.cvmfs.server_binary or "cvmfs_server", path=search)


def apt_candidate(package: str = PACKAGE) -> str | None:
    """The version apt would install from the configured sources, or None."""
    try:
        policy = subprocess.run(
            ["apt-cache", "policy", package], capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in policy.stdout.splitlines():
        name, _, value = line.strip().partition(":")
        if name == "Candidate":
            return None if value.strip() in ("", "(none)") else value.strip()
    return None


def _apt(*args: str) -> None:
    step = ["apt-get", *_LOCK_WAIT, *args]
    done = subprocess.run(step, env={**os.environ, **_APT_ENV}, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise ToolError(f"{' '.join(step)} failed (exit {done.returncode}):\n{tail}")


def install_server(log: Log) -> None:
    """apt-get install cvmfs-server from the site's apt sources (lists refreshed once if apt lacks it)."""
    if os.geteuid() != 0:
        raise MissingPartError("cvmfs_server", f"as root, run: apt-get install -y {PACKAGE}")
    if apt_candidate() is None:
        log("apt has no cvmfs-server package: refreshing the package lists (apt-get update)")
        _apt("update")
    version = apt_candidate()
    if version is None:
        raise MissingPartError("cvmfs_server", HOW_TO_GET)
    log(f"installing {PACKAGE} {version} from the site's apt sources")
    _apt("install", "-y", "--no-install-recommends", PACKAGE)


def listed(binary: str, repository: str) -> bool:
    """Whether `cvmfs_server list` names the repository (each line starts with a repository's name)."""
    done = subprocess.run([binary, "list"], capture_output=True, text=True, check=False, cwd="/")
    if done.returncode != 0:
        raise ToolError(f"{binary} list failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return any(line.split(maxsplit=1)[:1] == [repository] for line in done.stdout.splitlines())


def apply_settings(repository: str) -> None:
    """Set SETTINGS in the repository's server.conf, other lines unchanged."""
    conf = REPOSITORIES_D / repository / "server.conf"
    try:
        lines = conf.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ToolError(f"cannot read {conf} after cvmfs_server mkfs: {exc.strerror}") from exc
    kept = [line for line in lines if line.split("=", 1)[0].strip() not in SETTINGS]
    kept += [f"{key}={value}" for key, value in SETTINGS.items()]
    tmp = conf.with_name(f".{conf.name}.imagekit.tmp")
    tmp.write_text("\n".join(kept) + "\n", encoding="utf-8")
    os.replace(tmp, conf)


def create_repository(binary: str, repository: str, log: Log, cvmfs: CvmfsSettings | None = None) -> None:
    """`cvmfs_server mkfs` with the settings imagekit expects (the web server is started first: mkfs
    refuses without it), then its bucket directories (`CvmfsServerBackend.prepare`; `cvmfs`: the
    profile's spool, root and `layers`, else upstream's defaults, where mkfs puts a repository)."""
    ensure_web_server(log)
    log(f"creating CVMFS repository {repository} (cvmfs_server mkfs {' '.join(MKFS_OPTIONS)})")
    done = subprocess.run(
        [binary, "mkfs", *MKFS_OPTIONS, repository], capture_output=True, text=True, check=False, cwd="/"
    )
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise ToolError(f"cvmfs_server mkfs {repository} failed (exit {done.returncode}): {' '.join(tail)}")
    apply_settings(repository)
    settings = (cvmfs or CvmfsSettings()).model_copy(
        update={"backend": "cvmfs_server", "repository": repository, "server_binary": binary}
    )
    backend = CvmfsServerBackend(Profile(cvmfs=settings))
    with backend.lock(log):
        backend.prepare(log, settings.layers)


def ensure_cvmfs_server(profile: Profile, log: Log) -> None:
    """For the cvmfs_server backend: install cvmfs-server if missing, create the repository if absent."""
    if profile.cvmfs.backend != "cvmfs_server":
        return
    binary = server_binary(profile)
    if binary is None:
        install_server(log)
        binary = server_binary(profile)
        if binary is None:
            raise ToolError(f"{PACKAGE} is installed but no cvmfs_server is on PATH (cvmfs.server_binary?)")
    if not listed(binary, profile.cvmfs.repository):
        create_repository(binary, profile.cvmfs.repository, log, profile.cvmfs)
    else:  # its web server and mounts, which a reboot took away
        CvmfsServerBackend(profile).serve(log)


def status(profile: Profile) -> tuple[bool, str, str]:
    """What doctor shows: is cvmfs_server here and the profile's repository created; how to get them."""
    binary = server_binary(profile)
    repository = profile.cvmfs.repository
    if binary is None:
        candidate = apt_candidate()
        if candidate is None:
            return False, f"not installed; apt has no {PACKAGE} package", HOW_TO_GET
        how = f"imagekit dev up installs it (apt-get install -y {PACKAGE}) and creates {repository}"
        return False, f"not installed; apt offers {PACKAGE} {candidate}", how
    try:
        created = listed(binary, repository)
    except (ToolError, OSError) as exc:
        return False, f"{binary}: {exc}", "see cvmfs/README.md"
    mkfs = f"cvmfs_server mkfs {' '.join(MKFS_OPTIONS)} {repository}"
    how = f"imagekit dev up creates it ({mkfs}, then the settings of cvmfs/README.md)"
    state = f"{binary}: repository {repository} " + ("created" if created else "not created")
    try:
        serving = web_server_running()
        problems = CvmfsServerBackend(profile).not_serving() if created else []
    except MissingPartError as exc:
        return False, f"{state}; no web server installed", exc.how_to_get
    if problems:
        how = f"imagekit dev up (or the next publish) starts Apache and runs cvmfs_server mount {repository}"
        return False, f"{state}: {', '.join(problems)}", how
    return created, f"{state}; Apache " + ("running" if serving else "not running (dev up starts it)"), how

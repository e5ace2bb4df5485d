"""Where the tree goes: a local directory, or a CVMFS repository through the real `cvmfs_server`.

Both run every change inside one transaction under imagekit's own per-repository lock (CVMFS's
transaction flag has no owner: any process could publish or abort another's work).
`local`: changes are staged beside the tree and switched in with atomic renames; each change is
journalled before it is made, so an abort, or the next run after a crash (SIGKILL, power), undoes the
changes made so far and the tree is exactly what it was.
`cvmfs_server`: `transaction` (a template transaction `-T` to clone a flat), write in
`/cvmfs/<repo>`, `publish`; on any failure `abort -f`, then the original error is reported. A whole new
tree is streamed into `cvmfs_server ingest` (its own transaction) before that transaction, instead of
being written file by file through the transaction's union file system.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import queue
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from imagekit.config import Profile
from imagekit.cvmfs.flatten import Writable
from imagekit.cvmfs.layout import CATALOG, FLAT, LAYERS, STATE, normalise
from imagekit.errors import MissingPartError, ToolError
from imagekit.resources import data_path

Log = Callable[[str], None]
SendTar = Callable[[Writable, list[str]], None]
BUCKETS = [f"{n:02x}" for n in range(256)]
"""`.flat/<xx>` and `.layers/<xx>`: the first two hex digits of a digest."""
DIRTAB = ".cvmfsdirtab"
ALREADY_OPEN = 17
PIPE_SIZE = 1 << 20
WRITE_AHEAD = 64
"""Writes (of at most ~1 MiB each) the tar's sender may be ahead of `cvmfs_server ingest`: its reader
waits for each file to be processed before it reads on, so the next files are ready in the pipe."""
NONE_OPEN = 22


@dataclass(frozen=True)
class Revision:
    number: int
    time: str


class Transaction:
    """Changes to the tree; nothing is visible as final until `commit`."""

    markers = True
    """Whether overlayfs markers (whiteouts, opaque directories) can be written in this transaction."""
    cloned = False
    """Whether `new_tree(rel, template)` clones the published template in the store's catalog (its
    entries are the published ones, whose contents CVMFS checks by hash when they are read), rather
    than hard-linking the template's inodes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def new_tree(self, rel: str, template: str | None) -> Path:
        """Where to build the tree that `place_tree(rel)` puts at `rel` (a copy of `template`, or empty)."""
        raise NotImplementedError

    def place_tree(self, rel: str) -> None:
        raise NotImplementedError

    def write_file(self, rel: str, data: bytes) -> None:
        path = self.root / normalise(rel)
        self._parents(path)
        tmp = self._scratch(path)
        tmp.write_bytes(data)
        self._keep(rel)
        os.replace(tmp, path)

    def write_dir(self, rel: str, files: dict[str, bytes]) -> None:
        """A directory of files, in the order given (the mark of completeness last)."""
        raise NotImplementedError

    def symlink(self, rel: str, target: str) -> None:
        path = self.root / normalise(rel)
        self._parents(path)
        tmp = self._scratch(path)
        os.symlink(target, tmp)
        self._keep(rel)
        os.replace(tmp, path)

    def remove(self, rel: str) -> None:
        raise NotImplementedError

    def copy_tree(self, source: Path, rel: str) -> None:
        """A hard-link copy of `source` at `rel`."""
        raise NotImplementedError

    def _scratch(self, path: Path) -> Path:
        """Where a file is written before it is renamed to `path` (same file system)."""
        return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")

    def _keep(self, rel: str) -> None:
        """Remember what `rel` was, for an abort (the local backend; CVMFS keeps its own)."""

    def _parents(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)


class Backend:
    name = ""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.repository = profile.cvmfs.repository

    @property
    def root(self) -> Path:
        raise NotImplementedError

    def lock_path(self) -> Path:
        raise NotImplementedError

    @contextlib.contextmanager
    def lock(self, log: Log) -> Iterator[None]:
        """imagekit's per-repository lock; waits `cvmfs.lock_timeout` seconds for another publisher."""
        path = self.lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+") as handle:
            deadline = time.monotonic() + self.profile.cvmfs.lock_timeout
            told = False
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    if time.monotonic() >= deadline:
                        raise ToolError(
                            f"CVMFS repository {self.repository} is locked by {holder} "
                            f"(waited {self.profile.cvmfs.lock_timeout} s; lock {path})"
                        ) from None
                    if not told:
                        log(f"waiting for {holder} to finish with {self.repository}")
                        told = True
                    time.sleep(0.2)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} since {datetime.now(UTC).isoformat(timespec='seconds')}\n")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)

    def recover(self, log: Log) -> None:
        """Clean what a crashed run left (called under the lock, before anything else)."""

    def serve(self, log: Log) -> None:
        """Make the tree readable where it is read; a plain directory always is."""

    def prepare(self, log: Log, layers: bool) -> None:
        """Make what every publication expects to find (called under the lock, before a publication)."""

    def transaction(
        self, log: Log, template: tuple[str, str] | None = None
    ) -> contextlib.AbstractContextManager[Transaction]:
        raise NotImplementedError

    def revision(self) -> Revision | None:
        raise NotImplementedError

    streams = False
    """Whether a whole new tree is landed from a tar stream by `landed`, outside the transaction; the
    local backend builds it inside its transaction (staged there, switched in by a rename)."""

    def landed(self, trees: list[str], send: SendTar, log: Log) -> contextlib.AbstractContextManager[None]:
        """The whole `trees` put in place from the tar `send(out, parents)` writes (`parents`: the
        missing parent directories, to come first); removed again if the block fails."""
        raise NotImplementedError

    def collect_garbage(self, log: Log) -> None:
        """The backend's own garbage collection, after imagekit removed what nothing references."""


# --- local ---------------------------------------------------------------------------------------------


JOURNAL = "journal"


class _LocalTransaction(Transaction):
    """Every change to the tree is first appended to the staging area's journal as the step that
    undoes it; each undo step is harmless when its change was never made, so a journal replayed after
    a crash at any point (`undo_journal`) puts the tree back exactly."""

    def __init__(self, root: Path, staging: Path) -> None:
        super().__init__(root)
        self.staging = staging
        self._undo: list[tuple[str, str, str]] = []
        self._saved = 0

    def _will(self, step: str, path: Path, other: Path | None = None) -> None:
        entry = (step, str(path), str(other or ""))
        self._undo.append(entry)
        with (self.staging / JOURNAL).open("a", encoding="utf-8") as journal:
            journal.write(json.dumps(entry) + "\n")

    def _scratch(self, path: Path) -> Path:
        return self.staging / f"new-{uuid.uuid4().hex[:8]}"

    def _keep(self, rel: str) -> None:
        path = self.root / normalise(rel)
        if os.path.lexists(path):
            self._saved += 1
            backup = self.staging / f"saved-{self._saved}"
            if path.is_dir() and not path.is_symlink():
                shutil.copytree(path, backup, symlinks=True)
            else:
                shutil.copy2(path, backup, follow_symlinks=False)
            self._will("put_back", backup, path)
        else:
            self._will("drop", path)

    def _work(self, rel: str) -> Path:
        return self.staging / ("tree-" + normalise(rel).replace("/", "_"))

    def _parents(self, path: Path) -> None:
        """Missing parents are made, and removed again by an abort."""
        missing = []
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            self._will("rmdir", directory)
            directory.mkdir()

    def new_tree(self, rel: str, template: str | None) -> Path:
        work = self._work(rel)
        if template is None:
            work.mkdir(mode=0o755)
        else:
            _link_copy(self.root / normalise(template), work)
        return work

    def copy_tree(self, source: Path, rel: str) -> None:
        final = self.root / normalise(rel)
        built = self.staging / f"copy-{len(self._undo)}"
        _link_copy(source, built)
        self._parents(final)
        self._will("drop", final)
        os.rename(built, final)

    def place_tree(self, rel: str) -> None:
        final, work = self.root / normalise(rel), self._work(rel)
        self._parents(final)
        if final.exists():
            old = self.staging / f"old-{len(self._undo)}"
            self._will("rename", old, final)
            os.rename(final, old)
        self._will("rename", final, work)
        os.rename(work, final)

    def write_dir(self, rel: str, files: dict[str, bytes]) -> None:
        final = self.root / normalise(rel)
        built = self.staging / f"dir-{len(self._undo)}"
        built.mkdir(mode=0o755)
        for name, data in files.items():
            (built / name).write_bytes(data)
            os.chmod(built / name, 0o644)
        self._parents(final)
        if final.exists():
            old = self.staging / f"old-{len(self._undo)}"
            self._will("rename", old, final)
            os.rename(final, old)
        self._will("drop", final)
        os.rename(built, final)

    def remove(self, rel: str) -> None:
        path = self.root / normalise(rel)
        if not os.path.lexists(path):
            return
        trash = self.staging / f"removed-{len(self._undo)}"
        self._will("rename", trash, path)
        os.rename(path, trash)

    def abort(self) -> None:
        for step in reversed(self._undo):
            _undo_step(*step)
        self._undo.clear()

    def commit(self) -> None:
        """The point of no return: without its journal, the staging area is only leftovers."""
        (self.staging / JOURNAL).unlink()


def undo_journal(staging: Path) -> bool:
    """Undo, newest first, the changes a crashed transaction journalled; False if it had none."""
    try:
        lines = (staging / JOURNAL).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return False
    steps = []
    for line in lines:
        try:
            step, path, other = json.loads(line)
        except ValueError:
            break  # torn by the crash: its change was never made
        steps.append((str(step), str(path), str(other)))
    for step in reversed(steps):
        _undo_step(*step)
    return True


def _undo_step(step: str, path: str, other: str) -> None:
    """One undo step; a no-op when its change was not made (or was undone already)."""
    if step == "put_back":  # `path` is the saved copy of `other`
        if os.path.lexists(path):
            _put_back(Path(path), Path(other))
    elif step == "drop":
        _drop(Path(path))
    elif step == "rmdir":
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(path)
    elif step == "rename" and os.path.lexists(path):
        os.rename(path, other)


LINK_THREADS = 2
"""Threads of a hard-link copy: link() and mkdir() wait in the kernel without the GIL, and the kernel
links into different directories at once (measured on 2 cores: ~1.6x faster with 2, no better with 3
or 4)."""


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _link_copy(source: Path, target: Path) -> None:
    """What `cp -a --link` makes: directories copied with their metadata and xattrs, every other entry a
    hard link (symlinks too), nothing followed. In one process: ~10,000 links take a fraction of the
    time of cp's fork and per-entry checks, and they are what a code-only version waits for. Each
    directory is worked on through its descriptor (no path is resolved again per entry)."""
    try:
        os.mkdir(target, 0o700)
        copy = _LinkCopy(os.lstat(target))
        copy.todo.append((str(source), str(target), os.lstat(source), 0))
        copy.run(LINK_THREADS)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ToolError(f"hard-link copy of {source} failed: {exc}") from exc


class _LinkCopy:
    """The directories still to copy, shared by a few threads. A directory's metadata is set as soon as
    its entries are made (making its subdirectories' entries changes nothing of it); one whose mode
    would keep its owner out of it is set last, deepest first, as cp does."""

    def __init__(self, made: os.stat_result) -> None:
        self.owner = (made.st_uid, made.st_gid)
        """Who owns every directory made here: the target's owner (a setgid parent's group is the
        target's and its subdirectories' alike)."""
        self.todo: list[tuple[str, str, os.stat_result, int]] = []
        self.last: list[tuple[str, str, os.stat_result, int]] = []
        self.busy = 0
        self.failed: BaseException | None = None
        self.turn = threading.Condition()

    def run(self, threads: int) -> None:
        helpers = [threading.Thread(target=self._work, daemon=True) for _ in range(threads - 1)]
        for helper in helpers:
            helper.start()
        try:
            self._work()
        except BaseException as exc:
            with self.turn:  # the helpers stop at their next directory
                self.failed = self.failed or exc
            raise
        finally:
            for helper in helpers:
                helper.join()
        if self.failed is not None:
            raise self.failed
        for src, dst, st, _ in sorted(self.last, key=lambda each: -each[3]):
            with _opened(src) as src_fd, _opened(dst) as dst_fd:
                self._set_metadata(src_fd, dst_fd, st, dst)

    def _work(self) -> None:
        while True:
            with self.turn:
                while not self.todo and self.busy and self.failed is None:
                    self.turn.wait()
                if not self.todo or self.failed is not None:
                    self.turn.notify_all()
                    return
                item = self.todo.pop()
                self.busy += 1
            found: list[tuple[str, str, os.stat_result, int]] = []
            try:
                found = self._copy_dir(*item)
            except BaseException as exc:  # run() raises it in the caller's thread
                with self.turn:
                    self.failed = self.failed or exc
            with self.turn:
                self.todo.extend(found)
                self.busy -= 1
                self.turn.notify_all()

    def _copy_dir(
        self, src: str, dst: str, st: os.stat_result, depth: int
    ) -> list[tuple[str, str, os.stat_result, int]]:
        found = []
        with _opened(src) as src_fd, _opened(dst) as dst_fd, os.scandir(src_fd) as entries:
            for entry in entries:
                name = entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        os.mkdir(name, 0o700, dir_fd=dst_fd)
                        sub = entry.stat(follow_symlinks=False)
                        found.append((f"{src}/{name}", f"{dst}/{name}", sub, depth + 1))
                    else:
                        os.link(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
                except OSError as exc:  # named by its paths, not by the name in its directory
                    raise OSError(exc.errno, exc.strerror, f"{src}/{name}", None, f"{dst}/{name}") from exc
            if st.st_mode & 0o300 == 0o300:
                self._set_metadata(src_fd, dst_fd, st, dst)
            else:
                with self.turn:
                    self.last.append((src, dst, st, depth))
        return found

    def _set_metadata(self, src_fd: int, dst_fd: int, st: os.stat_result, dst: str) -> None:
        try:
            for name in os.listxattr(src_fd):
                with contextlib.suppress(OSError):  # one this filesystem refuses is left out, as cp -a does
                    os.setxattr(dst_fd, name, os.getxattr(src_fd, name))
            if (st.st_uid, st.st_gid) != self.owner:
                os.fchown(dst_fd, st.st_uid, st.st_gid)
            os.fchmod(dst_fd, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid/setgid
            os.utime(dst_fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, dst) from exc


@contextlib.contextmanager
def _opened(directory: str) -> Iterator[int]:
    fd = os.open(directory, _DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def _put_back(backup: Path, path: Path) -> None:
    _drop(path)
    os.rename(backup, path)


def _drop(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


class LocalBackend(Backend):
    name = "local"

    @property
    def root(self) -> Path:
        return self.profile.cvmfs_root

    @property
    def _state(self) -> Path:
        return self.root / STATE

    def lock_path(self) -> Path:
        return self._state / "lock"

    def recover(self, log: Log) -> None:
        staging = self._state / "staging"
        if staging.is_dir():
            for leftover in sorted(staging.iterdir()):
                if undo_journal(leftover):
                    log(f"an interrupted run changed {self.root}: its changes were undone")
                    (leftover / JOURNAL).unlink()
                log(f"removing what an interrupted run left: {leftover}")
                shutil.rmtree(leftover)

    @contextlib.contextmanager
    def transaction(self, log: Log, template: tuple[str, str] | None = None) -> Iterator[_LocalTransaction]:
        staging = self._state / "staging" / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        txn = _LocalTransaction(self.root, staging)
        try:
            yield txn
            number = (self.revision() or Revision(0, "")).number + 1
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            txn.write_file(f"{STATE}/revision.json", json.dumps({"revision": number, "time": stamp}).encode())
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def revision(self) -> Revision | None:
        """The tree's revision; 0 before its first publication, None when the counter is unreadable."""
        counter = self._state / "revision.json"
        if not counter.exists():
            return Revision(0, "")
        try:
            data = json.loads(counter.read_text(encoding="utf-8"))
            return Revision(int(data["revision"]), str(data["time"]))
        except (OSError, ValueError, KeyError):
            return None


# --- cvmfs_server --------------------------------------------------------------------------------------


class _ServerTransaction(Transaction):
    markers = False  # the transaction's own overlayfs would take them as changes of the repository
    cloned = True  # `transaction -T`

    def new_tree(self, rel: str, template: str | None) -> Path:
        path = self.root / normalise(rel)
        if template is None:
            _drop(path)  # rebuilt whole (CVMFS stores each content once)
            path.mkdir(mode=0o755, parents=True)
        elif not path.is_dir():
            raise ToolError(f"cvmfs_server transaction -T did not create /{normalise(rel)}")
        return path

    def place_tree(self, rel: str) -> None:
        return None  # written in place; the publish makes it visible

    def write_dir(self, rel: str, files: dict[str, bytes]) -> None:
        final = self.root / normalise(rel)
        final.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            self.write_file(f"{rel}/{name}", data)

    def remove(self, rel: str) -> None:
        _drop(self.root / normalise(rel))

    def copy_tree(self, source: Path, rel: str) -> None:
        final = self.root / normalise(rel)
        final.parent.mkdir(parents=True, exist_ok=True)
        _link_copy(source, final)


class CvmfsServerBackend(Backend):
    name = "cvmfs_server"
    streams = True

    @property
    def binary(self) -> str:
        return self.profile.cvmfs.server_binary or "cvmfs_server"

    @property
    def root(self) -> Path:
        return Path(self.profile.cvmfs.root) if self.profile.cvmfs.root else Path("/cvmfs") / self.repository

    @property
    def spool(self) -> Path:
        return Path(self.profile.cvmfs.spool_dir) / self.repository

    def lock_path(self) -> Path:
        if not self.spool.is_dir():
            raise ToolError(
                f"{self.spool} is missing: this machine is not a publisher of {self.repository} "
                "(create the repository with cvmfs_server mkfs, see cvmfs/README.md)"
            )
        return self.spool / "imagekit.lock"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.binary, *args], capture_output=True, text=True, check=False, cwd="/", timeout=3600
            )
        except FileNotFoundError as exc:
            raise self._missing() from exc

    def _missing(self) -> MissingPartError:
        return MissingPartError(
            "cvmfs_server",
            "install cvmfs-server from the site's CERN apt repository on the Stratum 0 or publisher "
            "(imagekit dev up does it with cvmfs.backend = cvmfs_server); see cvmfs/README.md",
        )

    def _abort(self, log: Log) -> None:
        done = self.run("abort", "-f", self.repository)
        if done.returncode not in (0, NONE_OPEN):
            log(f"cvmfs_server abort -f {self.repository} failed too: {_tail(done)}")

    def recover(self, log: Log) -> None:
        self.serve(log)
        if (self.spool / "in_transaction.lock").exists():
            log(f"{self.repository} has an open transaction (an interrupted run?): aborting it first")
            self._abort(log)
        self._drop_pending(log)
        shutil.rmtree(self.spool / "imagekit.aside", ignore_errors=True)  # where imagekit 0.x built trees

    def serve(self, log: Log) -> None:
        """A repository of this machine's own Stratum 0 needs its web server (every `transaction` fetches
        `.cvmfspublished` from it, and so does the read-only mount under the tree) and its two mounts,
        which a reboot leaves unmounted (upstream's /etc/fstab lines are `noauto`): the web server is
        started and the repository mounted again (`cvmfs_server mount`, upstream's boot-time repair)."""
        conf = _server_conf(self.repository)
        if conf is None:  # not a repository of this machine (a stand-in's); lock_path says what is missing
            return
        if _served_here(conf):
            ensure_web_server(log)
        if not self.mounted():
            log(f"{self.repository} is not mounted (after a reboot?): cvmfs_server mount {self.repository}")
            done = self.run("mount", self.repository)
            if done.returncode != 0:
                raise ToolError(f"cvmfs_server mount {self.repository} failed: {_tail(done)}")

    def prepare(self, log: Log, layers: bool) -> None:
        """Every `.flat/<xx>` bucket (and `.layers/<xx>` with `layers`) with its `.cvmfscatalog`, and the
        `.cvmfsdirtab` imagekit ships, made in one transaction the first time a repository is published
        to (`imagekit dev up` does it when it creates one): `transaction -T` clones only under an
        existing parent, and a version whose bucket had to be published first took a transaction more.
        An older dirtab is replaced: its rules inside the buckets cost every publish ~0.4 s."""
        wanted = [FLAT, LAYERS] if layers else [FLAT]
        missing = [
            f"{top}/{bucket}" for top in wanted for bucket in sorted(set(BUCKETS) - _names(self.root / top))
        ]
        dirtab = data_path("cvmfs/cvmfsdirtab").read_bytes()
        try:
            new_dirtab = (self.root / DIRTAB).read_bytes() != dirtab
        except FileNotFoundError:
            new_dirtab = True
        if not missing and not new_dirtab:
            return
        what = f"its {len(missing)} missing bucket directories" + (f" and {DIRTAB}" if new_dirtab else "")
        log(f"{self.repository}: making {what} (once)")
        with self._transaction(log, ()) as txn:
            if new_dirtab:
                txn.write_file(DIRTAB, dirtab)
            for rel in missing:
                (txn.root / rel).mkdir(mode=0o755, parents=True, exist_ok=True)
                txn.write_file(f"{rel}/{CATALOG}", b"")

    def mounted(self) -> bool:
        return os.path.ismount(self.root) and os.path.ismount(self.spool / "rdonly")

    def not_serving(self) -> list[str]:
        """What `serve` would put right (for doctor); [] for a repository this machine does not hold."""
        conf = _server_conf(self.repository)
        if conf is None:
            return []
        stopped = ["Apache not running"] if _served_here(conf) and not web_server_running() else []
        return stopped + ([] if self.mounted() else ["not mounted (after a reboot?)"])

    @property
    def _pending_note(self) -> Path:
        return self.spool / "imagekit.pending"

    def _missing_parents(self, rels: list[str]) -> list[str]:
        """The parent directories of `rels` that are not in the repository yet, outermost first."""
        missing: list[str] = []
        for rel in rels:
            parent = os.path.dirname(normalise(rel))
            while parent and not (self.root / parent).is_dir() and parent not in missing:
                missing.append(parent)
                parent = os.path.dirname(parent)
        return sorted(missing, key=lambda rel: rel.count("/"))

    def _note(self, lines: list[str]) -> None:
        with self._pending_note.open("a", encoding="utf-8") as note:
            note.writelines(f"{line}\n" for line in lines)

    def _drop_pending(self, log: Log) -> None:
        """Remove what a publication that did not complete made (the note's trees whole, its parents when
        empty), newest first, in one transaction: nothing of it stays visible."""
        try:
            lines = self._pending_note.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        drop: list[str] = []
        for line in reversed(lines):
            kind, _, rel = line.partition(" ")
            whole = kind == "tree" and os.path.lexists(self.root / rel)
            if whole or (kind == "parent" and _empty_dir(self.root, rel, drop)):
                drop.append(rel)
        if drop:
            log(f"removing what a publication that did not complete made: /{', /'.join(drop)}")
            with self._transaction(log, ()) as txn:
                for rel in drop:
                    txn.remove(rel)
        self._pending_note.unlink()

    def _undo_pending(self, log: Log) -> None:
        """`_drop_pending` after a failure, whose error is the one reported; the next run retries."""
        try:
            self._drop_pending(log)
        except ToolError as exc:
            log(f"{exc.message}; the next run of imagekit on {self.repository} removes it")

    @contextlib.contextmanager
    def transaction(self, log: Log, template: tuple[str, str] | None = None) -> Iterator[_ServerTransaction]:
        if template is None:
            with self._transaction(log, ()) as txn:
                yield txn
            return
        source, destination = normalise(template[0]), normalise(template[1])
        if not (self.root / os.path.dirname(destination)).is_dir():  # CloneTree would refuse: exit 22
            raise ToolError(f"cvmfs_server transaction -T: /{os.path.dirname(destination)} is missing")
        with self._transaction(log, ("-T", f"/{source}=/{destination}")) as txn:
            yield txn  # an abort (also `recover`'s, after a crash) takes the clone back with it

    @contextlib.contextmanager
    def landed(self, trees: list[str], send: SendTar, log: Log) -> Iterator[None]:
        """The trees from one `cvmfs_server ingest` (a revision of its own), noted in the spool until the
        block is done; removed again (as `recover` does after a crash) if it fails."""
        parents = self._missing_parents(trees)
        self._note([*(f"parent {rel}" for rel in parents), *(f"tree {rel}" for rel in trees)])
        try:
            self._ingest(trees, parents, send, log)
            yield
        except BaseException:
            self._undo_pending(log)
            raise
        self._pending_note.unlink(missing_ok=True)

    def _ingest(self, trees: list[str], parents: list[str], send: SendTar, log: Log) -> None:
        """The tar `send` writes into `cvmfs_server ingest -t - -b / -k`, which runs its own transaction
        and publish and aborts itself on error; when the sending fails, ingest is stopped and its
        transaction aborted. Entries of missing parents come first (root, 0755: with `-k` CVMFS 2.12
        makes them owned by nobody). No `--catalog`: a flat brings its own `.cvmfscatalog`, and with
        both CVMFS 2.11.5 fails an assertion."""
        log(f"ingesting /{', /'.join(trees)} (cvmfs_server ingest)")
        ingest = [self.binary, "ingest", "-t", "-", "-b", "/", "-k", self.repository]
        with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
            try:
                process = subprocess.Popen(
                    ingest, stdin=subprocess.PIPE, stdout=output, stderr=errors, cwd="/", process_group=0
                )
            except FileNotFoundError as exc:
                raise self._missing() from exc
            assert process.stdin is not None
            with contextlib.suppress(OSError):  # a larger pipe: many small files do not go in lockstep
                fcntl.fcntl(process.stdin, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            ahead = _WriteAhead(process.stdin)
            try:
                send(ahead, parents)
                ahead.close()
            except BrokenPipeError:
                pass  # ingest stopped reading: its exit status and output say why
            except BaseException:
                os.killpg(process.pid, signal.SIGKILL)  # before it could publish what it took so far
                process.wait()
                if (self.spool / "in_transaction.lock").exists():
                    self._abort(log)
                raise
            finally:
                ahead.stop()
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.close()
            returncode = process.wait()
            output.seek(0)
            errors.seek(0)
            said = [each.read().decode(errors="replace") for each in (output, errors)]
            done = subprocess.CompletedProcess(ingest, returncode, *said)
        if returncode != 0:
            if (self.spool / "in_transaction.lock").exists():  # its own abort failed (a busy mount)
                self._abort(log)
            raise ToolError(f"cvmfs_server ingest {self.repository} failed: {_tail(done)}")

    @contextlib.contextmanager
    def _transaction(self, log: Log, options: tuple[str, ...]) -> Iterator[_ServerTransaction]:
        opened = self.run("transaction", *options, self.repository)
        if opened.returncode == ALREADY_OPEN:
            raise ToolError(
                f"cvmfs_server transaction {self.repository}: another transaction is open "
                "(someone publishing outside imagekit?); try again when it is done"
            )
        if opened.returncode != 0:
            raise ToolError(f"cvmfs_server transaction {self.repository} failed: {_tail(opened)}")
        try:
            yield _ServerTransaction(self.root)
        except BaseException:
            self._abort(log)
            raise
        published = self.run("publish", self.repository)
        if published.returncode != 0:
            self._abort(log)
            raise ToolError(f"cvmfs_server publish {self.repository} failed: {_tail(published)}")

    def revision(self) -> Revision | None:
        try:
            number = int(os.getxattr(self.spool / "rdonly", "user.revision").decode().strip())
        except (OSError, ValueError):
            return None
        return Revision(number, datetime.now(UTC).isoformat(timespec="seconds"))

    def collect_garbage(self, log: Log) -> None:
        if (_server_conf(self.repository) or {}).get("CVMFS_GARBAGE_COLLECTION") != "true":
            log(f"{self.repository} does not allow garbage collection (CVMFS_GARBAGE_COLLECTION): skipped")
            return
        done = self.run("gc", "-f", self.repository)
        if done.returncode != 0:
            raise ToolError(f"cvmfs_server gc {self.repository} failed: {_tail(done)}")


class _WriteAhead:
    """Bytes written here go on to `out` from a thread of its own, up to WRITE_AHEAD writes behind."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=WRITE_AHEAD)
        self._broken: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="ingest-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._broken is None:
                try:
                    self._out.write(data)
                except OSError as exc:  # BrokenPipeError when ingest stopped reading
                    self._broken = exc  # the rest is taken and dropped: the sender never blocks on it

    def write(self, data: bytes) -> int:
        if self._broken is not None:
            raise self._broken
        self._queue.put(data)
        return len(data)

    def close(self) -> None:
        """Everything written has gone on (BrokenPipeError if the reader stopped, or the write's error)."""
        self.stop()
        if self._broken is not None:
            raise self._broken
        self._out.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


REPOSITORIES_D = Path("/etc/cvmfs/repositories.d")


def _server_conf(repository: str) -> dict[str, str] | None:
    """The repository's server.conf settings, None when this machine has no such repository."""
    try:
        lines = (REPOSITORIES_D / repository / "server.conf").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    pairs = (line.partition("=") for line in lines if not line.lstrip().startswith("#"))
    return {key.strip(): value.strip().strip("'\"") for key, sep, value in pairs if sep}


def _served_here(conf: dict[str, str]) -> bool:
    """Whether the repository's store is on this machine, served by its own Apache."""
    return conf.get("CVMFS_UPSTREAM_STORAGE", "local,").startswith("local,")


@dataclass(frozen=True)
class WebServer:
    """Apache as a distribution packages it: its configuration directory, service name and pid file,
    and how it is started where systemd does not run (a container)."""

    etc: str
    service: str
    pid_file: str
    start: tuple[tuple[str, ...], ...]


WEB_SERVERS = (
    WebServer("/etc/apache2", "apache2", "/run/apache2/apache2.pid", (("apache2ctl", "start"),)),
    WebServer(
        "/etc/httpd", "httpd", "/run/httpd/httpd.pid", (("apachectl", "start"), ("httpd", "-k", "start"))
    ),
)
_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
WEB_SERVER_HOW = (
    "a Stratum 0 serves its repositories over HTTP from its own Apache: install it "
    "(apt-get install -y apache2, or dnf install -y httpd), then run imagekit again"
)


def ensure_web_server(log: Log) -> None:
    """Start the machine's Apache when it is not running, the way this machine starts services
    (`systemctl` where systemd runs, else apache2ctl/apachectl): `cvmfs_server mkfs` refuses without it
    ("Apache must be installed and running") and no transaction opens without it."""
    server = _web_server()
    systemd = os.path.isdir("/run/systemd/system")
    if _web_server_running(server, systemd):
        return
    if systemd:
        starts: list[tuple[str, ...]] = [("systemctl", "start", server.service)]
    else:
        starts = [step for step in server.start if shutil.which(step[0], path=_SBIN_PATH)]
    if not starts:
        raise MissingPartError(f"{server.service} (apachectl)", WEB_SERVER_HOW)
    log(f"starting the web server of the Stratum 0 ({' '.join(starts[0])})")
    done = subprocess.run(list(starts[0]), capture_output=True, text=True, check=False, cwd="/", timeout=120)
    deadline = time.monotonic() + 10  # apachectl returns before the server wrote its pid file
    while done.returncode == 0 and not _web_server_running(server, systemd) and time.monotonic() < deadline:
        time.sleep(0.1)
    if done.returncode != 0 or not _web_server_running(server, systemd):
        raise ToolError(f"{' '.join(starts[0])} did not start {server.service}: {_tail(done)}")


def web_server_running() -> bool:
    """Whether the machine's Apache runs (doctor); MissingPartError when none is installed."""
    return _web_server_running(_web_server(), os.path.isdir("/run/systemd/system"))


def _web_server() -> WebServer:
    server = next((each for each in WEB_SERVERS if os.path.isdir(each.etc)), None)
    if server is None:
        raise MissingPartError("Apache (the Stratum 0's web server)", WEB_SERVER_HOW)
    return server


def _web_server_running(server: WebServer, systemd: bool) -> bool:
    """As cvmfs_server's own check asks the service manager: systemd's unit state, else the init
    script's test, whether the process in the pid file is alive."""
    if systemd:
        return (
            subprocess.run(["systemctl", "is-active", "--quiet", server.service], check=False).returncode == 0
        )
    try:
        pid = int(Path(server.pid_file).read_text(encoding="utf-8").split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _names(path: Path) -> set[str]:
    """The names in a directory, from one listing ({} when it is missing)."""
    try:
        return set(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return set()


def _empty_dir(root: Path, rel: str, dropped: list[str]) -> bool:
    """A directory with nothing in it but what is being dropped with it, and its `.cvmfscatalog` (which
    `cvmfs_server publish` makes where the repository's `.cvmfsdirtab` names one)."""
    path = root / rel
    if not path.is_dir() or path.is_symlink():
        return False
    return all(child.name == CATALOG or f"{rel}/{child.name}" in dropped for child in path.iterdir())


def _tail(done: subprocess.CompletedProcess[str]) -> str:
    text = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return f"exit {done.returncode}: {text[-1] if text else 'no output'}"


def backend_for(profile: Profile) -> Backend:
    return CvmfsServerBackend(profile) if profile.cvmfs.backend == "cvmfs_server" else LocalBackend(profile)

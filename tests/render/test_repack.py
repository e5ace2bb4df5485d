"""A local COTS archive is repacked into exactly what `tar -xf --no-same-owner --strip-components=N
-C extract_to` unpacks, as a tar that `ADD <tar> /` places: compared with GNU tar itself."""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.config import SiteSettings
from imagekit.errors import InputError
from imagekit.manifest import load_manifest
from imagekit.render import render
from imagekit.render.repack import ChecksumMismatch, Placement, RepackError, repack_archive

from .render_parts import SOURCE, Render, base_for

MTIME = 1_700_000_000
NO_CA = SiteSettings(ca_certificates=[])
EXTRACT_TO = "/opt/cots/tool"


def member(
    name: str, kind: bytes = tarfile.REGTYPE, *, mode: int = 0o644, data: bytes = b"", link: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, MTIME, link
    info.uid, info.gid, info.uname, info.gname = 1234, 5678, "vendor", "vendor"
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def vendor_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    """A vendor's archive: a `.` top entry, a versioned folder, an executable, a setuid helper, a
    symlink, hard links (one to a file in the stripped-away folder's subtree), an xattr of its own."""
    helper, _ = member("./tool-1.0/bin/helper", mode=0o4755, data=b"#!/bin/sh\necho helper\n")
    helper.pax_headers = {"SCHILY.xattr.user.vendor": "x"}
    helper.size = len(b"#!/bin/sh\necho helper\n")
    return [
        member("./", tarfile.DIRTYPE, mode=0o750),
        member("./tool-1.0/", tarfile.DIRTYPE, mode=0o755),
        member("./tool-1.0/bin/", tarfile.DIRTYPE, mode=0o755),
        member("./tool-1.0/bin/tool", mode=0o755, data=b"#!/bin/sh\necho tool 1.0\n"),
        (helper, b"#!/bin/sh\necho helper\n"),
        member("./tool-1.0/lib/", tarfile.DIRTYPE, mode=0o700),
        member("./tool-1.0/lib/libtool.so.1.0", data=b"\x7fELF" + bytes(range(256)) * 8),
        member("./tool-1.0/lib/libtool.so.1", tarfile.SYMTYPE, mode=0o777, link="libtool.so.1.0"),
        member("./tool-1.0/lib/abs", tarfile.SYMTYPE, mode=0o777, link="/usr/lib/x"),
        member("./tool-1.0/bin/tool-again", tarfile.LNKTYPE, mode=0o755, link="./tool-1.0/bin/tool"),
        member("./tool-1.0/lib/deep/", tarfile.DIRTYPE, mode=0o755),
        member("./tool-1.0/lib/deep/copy.so", tarfile.LNKTYPE, link="./tool-1.0/lib/libtool.so.1.0"),
        member("./tool-1.0/share/readme.txt", mode=0o444, data=b"read me\n"),
    ]


def write_archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w:gz") -> str:
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry below root: type, mode, size, content hash or link target, regular file mtime,
    and which other names share its inode (hard links)."""
    entries: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, list[str]] = {}
    for path in sorted([root, *root.rglob("*")]):
        info = path.lstat()
        name = str(path.relative_to(root))
        if stat.S_ISREG(info.st_mode):
            inodes.setdefault(info.st_ino, []).append(name)
            content: object = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = os.readlink(path) if path.is_symlink() else ""
        mtime = int(info.st_mtime) if stat.S_ISREG(info.st_mode) else None
        entries[name] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_size, content, mtime)
    links = {name: tuple(group) for group in inodes.values() if len(group) > 1 for name in group}
    return {name: (*entry, links.get(name, ())) for name, entry in entries.items()}


def gnu_tar(archive: Path, root: Path, strip: int) -> dict[str, tuple[object, ...]]:
    """What the COTS stage gave: GNU tar unpacking into extract_to."""
    target = root / EXTRACT_TO.lstrip("/")
    target.mkdir(parents=True)
    subprocess.run(
        ["tar", "-xpf", str(archive), "--no-same-owner", f"--strip-components={strip}", "-C", str(target)],
        check=True,
    )
    return tree(target)


def added(repacked: Path, root: Path) -> dict[str, tuple[object, ...]]:
    """What `ADD repacked /` gives, as GNU tar unpacks it at /."""
    root.mkdir()
    subprocess.run(["tar", "-xpf", str(repacked), "--no-same-owner", "-C", str(root)], check=True)
    return tree(root / EXTRACT_TO.lstrip("/"))


@pytest.fixture
def gnu_tar_present() -> None:
    if shutil.which("tar") is None:
        pytest.fail("GNU tar is needed to compare the repack with: apt-get install -y tar")


@pytest.mark.parametrize("strip", [0, 1, 2])
@pytest.mark.parametrize("suffix", ["tar", "tar.gz", "tgz", "tar.bz2", "tar.xz"])
def test_the_repack_unpacks_as_gnu_tar_does(
    tmp_path: Path, gnu_tar_present: None, strip: int, suffix: str
) -> None:
    members = vendor_members()
    mode = {"tar": "w", "tar.gz": "w:gz", "tgz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}[suffix]
    archive = tmp_path / f"tool-1.0.{suffix}"
    digest = write_archive(archive, members, mode)
    repacked = tmp_path / "tool.tar"
    repack_archive(archive, repacked, Placement(EXTRACT_TO, strip), digest)

    assert added(repacked, tmp_path / "added") == gnu_tar(archive, tmp_path / "gnu", strip)
    with tarfile.open(repacked) as output:
        headers = output.getmembers()
    assert headers[0].name == "opt/cots/tool" and headers[0].isdir(), "extract_to comes first"
    assert headers[0].mode == (0o750 if strip == 0 else 0o755), "the archive's `.` entry, else 0755"
    assert all(h.name == "opt/cots/tool" or h.name.startswith("opt/cots/tool/") for h in headers), (
        "no entry for a parent: the base's /opt is never touched"
    )
    assert {(h.uid, h.gid, h.uname, h.gname) for h in headers} == {(0, 0, "", "")}
    assert not [h.name for h in headers if h.pax_headers], "no owners or xattrs of the vendor's"
    [again] = [h for h in headers if h.name.endswith("tool-again")]
    stripped = "./tool-1.0/bin/tool".split("/", strip)[-1]
    assert again.islnk() and again.linkname == posixpath.normpath(f"opt/cots/tool/{stripped}")


def test_the_same_archive_gives_the_same_bytes(tmp_path: Path) -> None:
    archive = tmp_path / "tool-1.0.tar.gz"
    digest = write_archive(archive, vendor_members())
    first, second = tmp_path / "first.tar", tmp_path / "second.tar"
    repack_archive(archive, first, Placement(EXTRACT_TO, 1), digest)
    repack_archive(archive, second, Placement(EXTRACT_TO, 1), digest)
    assert first.read_bytes() == second.read_bytes()


def test_an_archive_of_nothing_but_the_stripped_folder_gives_extract_to(tmp_path: Path) -> None:
    archive = tmp_path / "empty.tar"
    digest = write_archive(archive, [member("tool-1.0/", tarfile.DIRTYPE)], "w")
    repack_archive(archive, tmp_path / "out.tar", Placement(EXTRACT_TO, 1), digest)
    with tarfile.open(tmp_path / "out.tar") as output:
        assert [(h.name, h.isdir(), h.mode) for h in output] == [("opt/cots/tool", True, 0o755)]


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (
            member("tool-1.0/../../etc/passwd", data=b"root::0:0"),
            "member 'tool-1.0/../../etc/passwd' has '..'",
        ),
        (member("/etc/passwd", data=b"root::0:0"), "member '/etc/passwd' has an absolute name"),
        (
            member("tool-1.0/bin/shadow", tarfile.LNKTYPE, link="/etc/shadow"),
            "member 'tool-1.0/bin/shadow' is a hard link to '/etc/shadow', which has an absolute name",
        ),
        (
            member("tool-1.0/bin/up", tarfile.LNKTYPE, link="tool-1.0/../x"),
            "member 'tool-1.0/bin/up' is a hard link to 'tool-1.0/../x', which has '..'",
        ),
        (
            member("tool-1.0/bin/top", tarfile.LNKTYPE, link="toplevel"),
            "member 'tool-1.0/bin/top' is a hard link to 'toplevel', which is not unpacked before it",
        ),
    ],
)
def test_a_member_that_would_escape_is_refused_by_name(
    tmp_path: Path, bad: tuple[tarfile.TarInfo, bytes], says: str
) -> None:
    archive = tmp_path / "evil.tar.gz"
    members = [member("toplevel", data=b"x"), member("tool-1.0/", tarfile.DIRTYPE), bad]
    digest = write_archive(archive, members)
    target = tmp_path / "out.tar"
    with pytest.raises(RepackError) as refused:
        repack_archive(archive, target, Placement(EXTRACT_TO, 1), digest)
    assert str(refused.value).startswith(says)
    assert not target.exists(), "nothing half-written is kept"


def test_the_checksum_is_checked_first_whatever_else_is_wrong(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    write_archive(archive, [member("/etc/passwd", data=b"root::0:0")])
    target = tmp_path / "out.tar"
    expected = hashlib.sha256(b"the archive the manifest names").hexdigest()
    with pytest.raises(ChecksumMismatch) as mismatch:
        repack_archive(archive, target, Placement(EXTRACT_TO, 0), expected)
    assert mismatch.value.actual == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert not target.exists()


def test_what_is_no_tar_archive_says_so(tmp_path: Path) -> None:
    archive = tmp_path / "tool.tar.gz"
    archive.write_bytes(b"PK\x03\x04 a zip file, not a tar" * 40)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(RepackError, match=r"cannot be read as a tar, tar\.gz, tar\.bz2 or tar\.xz archive"):
        repack_archive(archive, tmp_path / "out.tar", Placement(EXTRACT_TO, 0), digest)


def test_render_names_the_manifest_field_and_the_member(
    render_example: Render, copy_processor: Callable[[str], Path]
) -> None:
    directory = copy_processor("olci-l1-demo")
    archive = directory / "cots" / "olci-lut-1.0.tar.gz"
    old = hashlib.sha256(archive.read_bytes()).hexdigest()
    new = write_archive(archive, [member("olci-lut-1.0/", tarfile.DIRTYPE), member("olci-lut-1.0/../../x")])
    manifest = directory / "processor.yaml"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    with pytest.raises(InputError) as refused:
        render_example(directory)
    assert refused.value.message == (
        f"{manifest}: cots[0].source: cots/olci-lut-1.0.tar.gz: "
        "member 'olci-lut-1.0/../../x' has '..' in its name"
    )


def xattrs_kept(directory: Path) -> bool:
    probe = directory / "xattr-probe"
    probe.touch()
    try:
        os.setxattr(probe, "user.imagekit.probe", b"1")
    except OSError:
        return False
    return True


def test_a_second_render_reuses_the_repacked_archive_only_when_made_alike(
    copy_processor: Callable[[str], Path], tmp_path: Path
) -> None:
    directory = copy_processor("olci-l1-demo")
    out = tmp_path / "rendered"

    def rendered() -> Path:
        manifest = load_manifest(directory)
        render(manifest, out, base=base_for(manifest), site=NO_CA, source=SOURCE)
        return out / "cots" / "olci-lut.tar"

    first = rendered()
    made = (first.stat().st_ino, first.read_bytes())
    again = rendered()
    if xattrs_kept(tmp_path):
        assert (again.stat().st_ino, again.read_bytes()) == made, "the same archive and placement: reused"
    else:  # the stamp needs user xattrs; without them every render repacks, to the same bytes
        assert again.stat().st_ino != made[0] and again.read_bytes() == made[1]

    text = (directory / "processor.yaml").read_text(encoding="utf-8")
    (directory / "processor.yaml").write_text(
        text.replace("extract_to: /opt/olci-lut", "extract_to: /opt/lut")
    )
    moved = rendered()
    assert moved.stat().st_ino != made[0] and moved.read_bytes() != made[1], "another placement: repacked"
    with tarfile.open(moved) as output:
        assert output.getnames()[0] == "opt/lut"

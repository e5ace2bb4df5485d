"""A local COTS archive reaches the image, through render's repack and one `ADD <tar> /`, exactly as
`tar -xf --no-same-owner --strip-components=N -C extract_to` unpacks it, on docker, podman and buildah:
type, mode (an executable, a setuid helper), owner, size, content, symlink targets and hard links,
for strip_components 0, 1 and 2. The base's /opt keeps its mode and owner."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagekit.config import Profile
from imagekit.engines import Engine, engine_for
from imagekit.engines.buildah import BuildahEngine
from imagekit.pipeline import build_processor

pytestmark = [pytest.mark.engine, pytest.mark.registry, pytest.mark.slow]

STRIPS = (0, 1, 2)
MTIME = 1_700_000_000


def vendor_archive(path: Path) -> str:
    """A vendor's tar.gz owned by its build user: `.` (0750), a versioned folder, an executable, a
    setuid helper, a private folder, symlinks (relative and absolute), hard links; returns its sha256."""
    entries: list[tuple[str, bytes, int, bytes, str]] = [
        ("./", tarfile.DIRTYPE, 0o750, b"", ""),
        ("./tool-1.0/", tarfile.DIRTYPE, 0o755, b"", ""),
        ("./tool-1.0/bin/", tarfile.DIRTYPE, 0o755, b"", ""),
        ("./tool-1.0/bin/tool", tarfile.REGTYPE, 0o755, b"#!/bin/sh\necho tool 1.0\n", ""),
        ("./tool-1.0/bin/helper", tarfile.REGTYPE, 0o4755, b"#!/bin/sh\necho helper\n", ""),
        ("./tool-1.0/lib/", tarfile.DIRTYPE, 0o700, b"", ""),
        ("./tool-1.0/lib/libtool.so.1.0", tarfile.REGTYPE, 0o644, b"\x7fELF" + bytes(range(256)) * 64, ""),
        ("./tool-1.0/lib/libtool.so.1", tarfile.SYMTYPE, 0o777, b"", "libtool.so.1.0"),
        ("./tool-1.0/lib/system", tarfile.SYMTYPE, 0o777, b"", "/usr/lib"),
        ("./tool-1.0/bin/tool-again", tarfile.LNKTYPE, 0o755, b"", "./tool-1.0/bin/tool"),
        ("./tool-1.0/share/", tarfile.DIRTYPE, 0o755, b"", ""),
        ("./tool-1.0/share/copy.so", tarfile.LNKTYPE, 0o644, b"", "./tool-1.0/lib/libtool.so.1.0"),
        ("./tool-1.0/share/readme.txt", tarfile.REGTYPE, 0o444, b"read me\n", ""),
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as archive:
        for name, kind, mode, data, link in entries:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.linkname = kind, mode, MTIME, link
            info.uid, info.gid, info.uname, info.gname = 1234, 5678, "vendor", "vendor"
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data else None)
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_processor(directory: Path) -> Path:
    (directory / "cots").mkdir(parents=True)
    (directory / "bin").mkdir()
    digest = vendor_archive(directory / "cots" / "tool-1.0.tar.gz")
    (directory / "bin" / "run").write_text("#!/bin/sh\nls /opt/cots\n", encoding="utf-8")
    (directory / "bin" / "run").chmod(0o755)
    cots = "".join(
        f"  - {{name: strip{n}, version: '1.0', source: cots/tool-1.0.tar.gz, sha256: {digest},"
        f" extract_to: /opt/cots/strip{n}, strip_components: {n}}}\n"
        for n in STRIPS
    )
    (directory / "processor.yaml").write_text(
        "schema_version: 1\n"
        f"processor: {{name: {directory.name}, version: 1.0.0}}\n"
        "base: {profile: debian-12}\n"
        f"cots:\n{cots}"
        "app:\n  copy:\n    - {from: bin/, to: /opt/processor/bin/}\n"
        "runtime: {entrypoint: [/opt/processor/bin/run]}\n"
        "tests: [{name: lists, run: [/opt/processor/bin/run], expect_stdout: strip0}]\n",
        encoding="utf-8",
    )
    return directory


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry from root down: type, mode, owner, size, content hash or link target, and the
    other names sharing its inode (hard links)."""
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
        size = info.st_size if not stat.S_ISDIR(info.st_mode) else 0
        kind, mode = stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode)
        entries[name] = (kind, mode, info.st_uid, info.st_gid, size, content)
    links = {name: tuple(group) for group in inodes.values() if len(group) > 1 for name in group}
    return {name: (*entry, links.get(name, ())) for name, entry in entries.items()}


def unpacked_by_gnu_tar(archive: Path, root: Path, strip: int) -> dict[str, tuple[object, ...]]:
    """What the COTS stage gave before: GNU tar, as root, unpacking into extract_to."""
    target = root / f"strip{strip}"
    target.mkdir(parents=True)
    target.chmod(0o755)
    command = [
        "tar",
        "-xf",
        str(archive),
        "--no-same-owner",
        f"--strip-components={strip}",
        "-C",
        str(target),
    ]
    subprocess.run(command, check=True)
    return tree(target)


def image_opt(export: Path, root: Path) -> tuple[Path, list[tarfile.TarInfo]]:
    """The image's /opt, its layers applied in order (as root, owners kept), and every header the
    layers hold for /opt itself, base first."""
    with tarfile.open(export) as image:
        [manifest] = json.loads(image.extractfile("manifest.json").read())  # type: ignore[union-attr]
        headers: list[tarfile.TarInfo] = []
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=image.extractfile(layer)) as content:  # type: ignore[arg-type]
                members = [m for m in content if m.name.removeprefix("./").split("/")[0] == "opt"]
                assert not [m.name for m in members if "/.wh." in m.name], "nothing of /opt is deleted"
                headers += [m for m in members if m.name.removeprefix("./").rstrip("/") == "opt"]
                content.extractall(root, members=members, numeric_owner=True, filter="fully_trusted")
    return root / "opt", headers


@pytest.fixture(
    params=[
        pytest.param("docker"),
        pytest.param("podman", marks=pytest.mark.podman),
        pytest.param("buildah", marks=pytest.mark.buildah),
    ]
)
def built_on(
    request: pytest.FixtureRequest,
    site_profile: Profile,
    local_env: dict[str, object],
    require_part,  # type: ignore[no-untyped-def]
    image_cleanup,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> Iterator[tuple[Profile, Engine, list[str]]]:
    """The site's profile set to one engine, that engine, and the tags removed afterwards; buildah
    builds on a storage of its own, discarded afterwards."""
    name = request.param
    if shutil.which(name) is None:
        require_part(f"{name} is not installed: apt-get install -y {name}")
    profile = site_profile.model_copy(
        update={"engine": site_profile.engine.model_copy(update={"name": name})}
    )
    if name != "buildah":
        yield profile, engine_for(profile), image_cleanup(getattr(profile.engine, name))
        return
    engine = engine_for(profile, storage_root=tmp_path / "buildah-storage")
    assert isinstance(engine, BuildahEngine)
    yield profile, engine, []
    engine.discard_storage()


def test_a_cots_lands_as_gnu_tar_unpacks_it(
    built_on: tuple[Profile, Engine, list[str]], tmp_path: Path
) -> None:
    profile, engine, tags = built_on
    directory = write_processor(tmp_path / f"ik-cots-{uuid.uuid4().hex[:8]}")
    outcome = build_processor(directory, profile, on_line=lambda _line: None, engine=engine)
    tags.extend(outcome.image.tags)
    tag = outcome.image.tags[0]
    dockerfile = outcome.rendered.definition.read_text(encoding="utf-8")
    assert [line for line in dockerfile.splitlines() if line.startswith("ADD ")] == [
        f"ADD cots/strip{n}.tar /" for n in STRIPS
    ], "one ADD per COTS, no stage"

    export = tmp_path / "image.tar"
    engine.export(tag, f"docker-archive:{export}")
    opt, opt_headers = image_opt(export, tmp_path / "image")
    archive = directory / "cots" / "tool-1.0.tar.gz"
    for strip in STRIPS:
        expected = unpacked_by_gnu_tar(archive, tmp_path / "gnu", strip)
        assert tree(opt / "cots" / f"strip{strip}") == expected, f"strip_components {strip}"
    helper = opt / "cots" / "strip2" / "bin" / "helper"  # `./` is a component, as GNU tar counts
    assert stat.S_IMODE(helper.lstat().st_mode) == 0o4755 and helper.lstat().st_uid == 0
    base, *after = opt_headers
    assert after, "the layers that add the COTS list /opt, as changed"
    kept = {(stat.S_IMODE(h.mode), h.uid, h.gid) for h in after}
    assert kept <= {(stat.S_IMODE(base.mode), base.uid, base.gid)}, "the base's /opt keeps its mode and owner"

#!/usr/bin/env python3
"""Repack Debian's cdo and the libraries it links into a vendor-style tarball, byte for byte the same
on every run and machine, so processor.yaml can pin its sha256.

    python3 cots/repack.py            # writes cots/cdo-2.1.1-bookworm-x86_64.tar.gz, prints its sha256

The packages and their .deb checksums are pinned in cots/packages.lock; they are fetched with
`apt-get download PACKAGE=VERSION` from the machine's own apt sources (a Debian 12 amd64 host, or
any host whose apt sources name a bookworm mirror). Debian mirrors keep only the newest version of
each package: when a pinned version is gone the script says which, and the way out is a Debian
snapshot archive in the apt sources, or new pins (then a new tarball and a new sha256).

Layout: cdo-2.1.1/bin/cdo (a wrapper that points the loader at lib/), libexec/cdo (Debian's
binary), lib/ (the bundled shared libraries the binary loads, soname links kept),
share/doc/<package>/copyright (every license), PACKAGES (what went in).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK = HERE / "packages.lock"
TOP = "cdo-2.1.1"
OUTPUT = HERE / f"{TOP}-bookworm-x86_64.tar.gz"
LIBDIR = "usr/lib/x86_64-linux-gnu"
MTIME = 1704067200  # 2024-01-01T00:00:00Z: every entry's time, so the bytes do not depend on the day
WRAPPER = b"""#!/bin/sh
# cdo from Debian 12, repacked: run the binary with the bundled libraries first on the loader's path.
here=$(dirname "$(readlink -f "$0")")/..
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/libexec/cdo" "$@"
"""


def read_lock() -> list[tuple[str, str, str]]:
    """(package, version, sha256 of the .deb) for each pinned package."""
    pins = []
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            spec, sha256 = line.split()
            package, version = spec.split("=", 1)
            pins.append((package, version, sha256))
    return pins


def download(pins: list[tuple[str, str, str]], into: Path) -> list[Path]:
    """Each pinned .deb from the configured apt sources, checked against its pinned sha256."""
    specs = [f"{package}={version}" for package, version, _ in pins]
    done = subprocess.run(
        ["apt-get", "download", *specs], cwd=into, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("E:")] or [done.stderr.strip()]
        sys.exit(
            "repack: apt-get download failed:\n  " + "\n  ".join(errors) + "\n"
            "Debian mirrors keep only the newest version of each package: a pinned version that is gone "
            "was replaced by an update. Run `apt-get update` first; if it is still missing, add a Debian "
            "snapshot archive of the pinned date to the apt sources, or pin the current versions in "
            "cots/packages.lock (with their sha256) and put the new tarball's sha256 in processor.yaml."
        )
    debs = []
    for package, _, sha256 in pins:
        (deb,) = into.glob(f"{package}_*.deb")
        got = hashlib.sha256(deb.read_bytes()).hexdigest()
        if got != sha256:
            sys.exit(f"repack: {deb.name} has sha256 {got}, but cots/packages.lock pins {sha256}")
        debs.append(deb)
    return debs


def unpack(deb: Path, root: Path) -> Path:
    """The package's files under root/<package>/."""
    target = root / deb.name.split("_", 1)[0]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    return target


def needed(elf: Path) -> list[str]:
    """The DT_NEEDED sonames of a 64-bit little-endian ELF file: what the loader must find for it."""
    data = elf.read_bytes()
    shoff, shentsize, shnum = (
        struct.unpack_from("<Q", data, 0x28)[0],
        *struct.unpack_from("<HH", data, 0x3A),
    )
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = []
    for _, kind, _, _, offset, size, link, *_ in sections:
        if kind == 6:  # SHT_DYNAMIC; its sh_link is the string table the names live in
            strtab = sections[link][4]
            for tag, value in struct.iter_unpack("<qQ", data[offset : offset + size]):
                if tag == 1:  # DT_NEEDED
                    names.append(data[strtab + value : data.index(b"\0", strtab + value)].decode())
    return names


def members(unpacked: dict[str, Path], versions: dict[str, str]) -> dict[str, Path | bytes]:
    """Archive name -> the file it is made from (or its bytes): the binary, the bundled libraries it
    loads (its DT_NEEDED closure; the rest come from the system), the licenses, the package list."""
    binary = unpacked["cdo"] / "usr/bin/cdo"
    found: dict[str, Path | bytes] = {f"{TOP}/bin/cdo": WRAPPER, f"{TOP}/libexec/cdo": binary}
    bundled = {lib.name: lib for tree in unpacked.values() for lib in (tree / LIBDIR).glob("lib*.so.*")}
    todo = [binary]
    while todo:
        for soname in needed(todo.pop()):
            if soname in bundled and f"{TOP}/lib/{soname}" not in found:
                link, real = bundled[soname], bundled[soname].resolve()
                found[f"{TOP}/lib/{soname}"] = link
                found[f"{TOP}/lib/{real.name}"] = real
                todo.append(real)
    for package, tree in unpacked.items():
        found[f"{TOP}/share/doc/{package}/copyright"] = tree / "usr/share/doc" / package / "copyright"
    listing = "".join(f"{package} {versions[package]}\n" for package in sorted(unpacked))
    found[f"{TOP}/PACKAGES"] = ("# Debian 12 packages repacked by cots/repack.py\n" + listing).encode()
    return found


def entry(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, size, link, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def write(found: dict[str, Path | bytes], output: Path) -> None:
    """A gzip'd tar: sorted entries, fixed time, owner and modes; no name or time in the gzip header."""
    names = set(found)
    directories = {str(parent) for name in names for parent in Path(name).parents if parent != Path(".")}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(names | directories):
            if name in directories:
                tar.addfile(entry(name + "/", tarfile.DIRTYPE, 0o755))
                continue
            source = found[name]
            if isinstance(source, bytes):
                mode = 0o755 if source is WRAPPER else 0o644
                tar.addfile(entry(name, tarfile.REGTYPE, mode, len(source)), io.BytesIO(source))
            elif source.is_symlink():
                tar.addfile(entry(name, tarfile.SYMTYPE, 0o777, link=str(source.readlink())))
            else:
                data = source.read_bytes()
                mode = 0o755 if source.stat().st_mode & 0o111 else 0o644
                tar.addfile(entry(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    with (
        output.open("wb") as out,
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz,
    ):
        gz.write(raw.getvalue())


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cdo-repack-") as work:
        downloads, root = Path(work) / "debs", Path(work) / "root"
        downloads.mkdir()
        root.mkdir()
        pins = read_lock()
        unpacked = {deb.name.split("_", 1)[0]: unpack(deb, root) for deb in download(pins, downloads)}
        write(members(unpacked, {package: version for package, version, _ in pins}), OUTPUT)
    print(f"{hashlib.sha256(OUTPUT.read_bytes()).hexdigest()}  {OUTPUT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

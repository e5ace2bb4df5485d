"""`imagekit validate` hashes each local COTS archive: a wrong sha256 is refused before any build.

The hash is cached in imagekit's data directory by path, size and mtime, the only file validation
writes; rendering hashes the archive again while copying it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from manifest_cases import GOOD, SHA, edit, locate

from imagekit.catalog import BaseRef
from imagekit.config import SiteSettings
from imagekit.errors import InputError, ManifestError, ToolError
from imagekit.manifest import load_manifest, validate_paths
from imagekit.manifest.checksums import CACHE_NAME
from imagekit.render import SourceInfo, render

ARCHIVE = "cots/vendor-tool-2.11.0.tar.gz"
WRONG = hashlib.sha256(b"another archive").hexdigest()
IMAGEKIT = Path(sys.executable).parent / "imagekit"


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every path below `directory` with its size and mtime: what changed, if anything."""
    return {
        str(path.relative_to(directory)): (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
    }


def test_a_wrong_sha256_is_reported_at_its_line_and_column(
    proc_dir: Path, write: Callable[[str], Path], tmp_path: Path
) -> None:
    line, column, text = locate(edit(GOOD, f"sha256: {SHA}", f"sha256: «{WRONG}"))
    write(text)
    ((_, error),) = validate_paths([proc_dir], data_dir=tmp_path / "data")
    assert isinstance(error, ManifestError)
    (problem,) = error.problems
    assert (problem.line, problem.column, problem.field) == (line, column, "cots[0].sha256")
    assert problem.message == f"expected {WRONG}, got {SHA} (the sha256sum of '{ARCHIVE}')"


def test_the_command_says_expected_and_got_and_exits_2(proc_dir: Path, tmp_path: Path) -> None:
    """As a user types it: from another directory, a relative path, the data dir from the profile."""
    line, column, text = locate(edit(GOOD, f"sha256: {SHA}", f"sha256: «{WRONG}"))
    (proc_dir / "processor.yaml").write_text(text, encoding="utf-8")
    env = {**os.environ, "IMAGEKIT_PATHS_DATA_DIR": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path)}
    env.pop("IMAGEKIT_PROFILE", None)
    result = subprocess.run(
        [str(IMAGEKIT), "validate", proc_dir.name],
        cwd=proc_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    expected = f"{proc_dir.name}/processor.yaml:{line}:{column}: cots[0].sha256: expected {WRONG}, got {SHA}"
    assert expected in result.stderr
    assert (tmp_path / "data" / CACHE_NAME).is_file()


def test_validate_writes_only_its_cache_and_a_repeat_does_not_hash_again(
    proc_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    before = snapshot(proc_dir)
    assert validate_paths([proc_dir], data_dir=data_dir) == [(proc_dir / "processor.yaml", None)]
    assert snapshot(proc_dir) == before
    assert sorted(p.name for p in data_dir.iterdir()) == [CACHE_NAME]
    cached = json.loads((data_dir / CACHE_NAME).read_text(encoding="utf-8"))
    assert [entry["sha256"] for entry in cached.values()] == [SHA]

    # Same size, same inode, mtime put back: only a cache hit still sees the old content.
    archive = proc_dir / ARCHIVE
    stamp = archive.stat()
    archive.write_bytes(archive.read_bytes().upper())
    os.utime(archive, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert validate_paths([proc_dir], data_dir=data_dir) == [(proc_dir / "processor.yaml", None)]
    # ... which rendering does not trust: it hashes while copying.
    manifest = load_manifest(proc_dir)
    with pytest.raises(InputError, match=r"cots\[0\]\.sha256: .* has sha256 "):
        render(
            manifest,
            tmp_path / "out",
            base=BaseRef(image="127.0.0.1:5000/imagekit/base/debian-12-python", digest="sha256:" + SHA),
            site=SiteSettings(ca_certificates=[]),
            source=SourceInfo(revision="unknown", short="unknown", created="1970-01-01T00:00:00Z"),
        )
    # A changed mtime is a changed file: hashed again, and refused.
    os.utime(archive, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1))
    ((_, error),) = validate_paths([proc_dir], data_dir=data_dir)
    assert isinstance(error, ManifestError)
    assert error.problems[0].field == "cots[0].sha256"


def test_a_corrupt_cache_only_costs_a_new_hash(proc_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / CACHE_NAME).write_text('{"' + str(proc_dir / ARCHIVE) + '": [', encoding="utf-8")
    line, column, text = locate(edit(GOOD, f"sha256: {SHA}", f"sha256: «{WRONG}"))
    (proc_dir / "processor.yaml").write_text(text, encoding="utf-8")
    ((_, error),) = validate_paths([proc_dir], data_dir=data_dir)
    assert isinstance(error, ManifestError)
    assert (error.problems[0].line, error.problems[0].column) == (line, column)
    assert json.loads((data_dir / CACHE_NAME).read_text(encoding="utf-8"))


def test_a_data_dir_that_cannot_be_written_is_a_clear_tool_error(proc_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(ToolError, match=r"cannot write the checksum cache: .*IMAGEKIT_PATHS_DATA_DIR"):
        validate_paths([proc_dir], data_dir=blocker / "data")


def test_remote_archives_and_unchanged_trees_are_not_hashed(proc_dir: Path, tmp_path: Path) -> None:
    """An https source is the engine's to verify; nothing to cache, nothing written."""
    remote = edit(GOOD, f"source: {ARCHIVE}", "source: https://mirror.example.org/vendor-tool-2.11.0.tar.gz")
    (proc_dir / "processor.yaml").write_text(remote, encoding="utf-8")
    shutil.rmtree(proc_dir / "cots")
    assert validate_paths([proc_dir], data_dir=tmp_path / "data") == [(proc_dir / "processor.yaml", None)]
    assert not (tmp_path / "data").exists()

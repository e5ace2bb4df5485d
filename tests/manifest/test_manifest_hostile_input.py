"""Bad input of every kind is refused with a located, one-line reason, quickly and with bounded memory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from manifest_cases import GOOD

from imagekit.errors import InputError, ManifestError
from imagekit.manifest import MAX_BYTES, load_manifest

BILLION_LAUGHS = b"""\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

ZOO = [
    ("empty", b"", 1, 1, "the file is empty"),
    ("only-comments", b"# a comment\n\n", 1, 1, "the file is empty"),
    ("only-null", b"~\n", 1, 1, "the file is empty"),
    ("a-list", b"- schema_version: 1\n", 1, 1, "expected a mapping of keys"),
    ("a-scalar", b"hello\n", 1, 1, "expected a mapping of keys"),
    ("invalid-yaml", b"schema_version: 1\nprocessor: [a\n", 3, 1, "not valid YAML"),
    ("tab-indent", b"schema_version: 1\n\tprocessor: x\n", 2, 1, "not valid YAML"),
    (
        "duplicate-key",
        b"schema_version: 1\nbase: {}\nbase: {}\n",
        3,
        1,
        "duplicate key 'base': each key may appear once",
    ),
    ("two-documents", b"schema_version: 1\n---\nschema_version: 1\n", 2, 1, "more than one YAML document"),
    ("billion-laughs", BILLION_LAUGHS, 2, 8, "YAML aliases (*name) are not supported"),
    ("merge-key-alias", b"x: &x {a: 1}\nbase:\n  <<: *x\n", 3, 7, "aliases"),
    ("deep-flow-nesting", b"[" * 100_000, 1, 21, "nested deeper than 20 levels"),
    ("deep-block-nesting", "".join(" " * i + "a:\n" for i in range(40)).encode(), 20, 20, "nested deeper"),
    ("too-many-values", b"a: [" + b"x," * 6_000 + b"]\n", 1, 9_999, "more than 5000 values"),
    ("too-many-lines", b"#\n" * 6_000, 5_001, 1, "more than 5000 lines"),
    ("binary", bytes(range(256)) * 8, 2, 118, "not UTF-8"),
    ("nul-byte", b"schema_version: 1\nprocessor: \x00\n", 2, 12, "control characters"),
    ("latin-1", "schema_version: 1\ndescription: caf\xe9\n".encode("latin-1"), 2, 17, "not UTF-8"),
    ("utf-16", "schema_version: 1\n".encode("utf-16"), 1, 1, "not UTF-8"),
    ("huge-integer", b"schema_version: " + b"9" * 5000 + b"\n", 1, 1, "not valid YAML"),
]


@pytest.mark.parametrize(
    ("content", "line", "column", "message"), [z[1:] for z in ZOO], ids=[z[0] for z in ZOO]
)
def test_hostile_input_is_a_located_problem(
    content: bytes, line: int, column: int, message: str, tmp_path: Path
) -> None:
    file = tmp_path / "processor.yaml"
    file.write_bytes(content)
    started = time.monotonic()
    with pytest.raises(ManifestError) as caught:
        load_manifest(file)
    assert time.monotonic() - started < 2
    first = caught.value.problems[0]
    assert (first.line, first.column) == (line, column), caught.value.message
    assert message in first.message


def test_python_tags_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    file = tmp_path / "processor.yaml"
    file.write_text(f"schema_version: 1\nlabels: !!python/object/apply:os.system [touch {marker}]\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(file)
    assert not marker.exists()
    assert "2:9: labels: YAML tags such as !!python/object/apply:os.system are not supported" in str(
        caught.value
    )


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    file = tmp_path / "processor.yaml"
    with file.open("wb") as stream:
        stream.truncate(50 * 1024 * 1024)  # sparse: 50 MB that costs no disk
    started = time.monotonic()
    with pytest.raises(ManifestError) as caught:
        load_manifest(file)
    assert time.monotonic() - started < 0.5
    assert caught.value.problems[0].message == (
        f"the file has {50 * 1024 * 1024} bytes; a processor.yaml may have at most {MAX_BYTES // 1024} KiB"
    )


def test_a_file_at_the_size_limit_is_parsed(tmp_path: Path) -> None:
    file = tmp_path / "processor.yaml"
    file.write_bytes(GOOD.encode() + b"#" * (MAX_BYTES - len(GOOD.encode())))
    with pytest.raises(ManifestError) as caught:
        load_manifest(file)
    assert "does not exist" in caught.value.message  # parsed and validated, only the files are missing


def test_a_byte_order_mark_is_fine(proc_dir: Path) -> None:
    (proc_dir / "processor.yaml").write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    load_manifest(proc_dir)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "nowhere", "nowhere: no such file or directory"),
        (lambda d: d, "no processor.yaml in this directory (`imagekit init"),
        (lambda d: Path("/dev/null"), "/dev/null: not a regular file"),
    ],
    ids=["missing", "directory-without-manifest", "device"],
)
def test_bad_paths_are_one_line_input_errors(
    make: Callable[[Path], Path], message: str, tmp_path: Path
) -> None:
    with pytest.raises(InputError) as caught:
        load_manifest(make(tmp_path))
    assert not isinstance(caught.value, ManifestError)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "processor.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load_manifest(tmp_path)


UNPRIVILEGED = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []
"""Root reads any file: as root, the permission case runs as nobody, so the refusal really happens."""
LOAD = """
import sys
from imagekit.errors import InputError
from imagekit.manifest import load_manifest
for path in sys.argv[1:]:
    try:
        load_manifest(path)
        print("loaded")
    except InputError as exc:
        print(exc.message.splitlines()[0])
"""


def test_an_unreadable_file_is_an_input_error() -> None:
    # tmp_path's parents are root's, mode 0700: a folder anyone may enter, so only the file's mode counts.
    work = Path(tempfile.mkdtemp(prefix="imagekit-unreadable-"))
    try:
        work.chmod(0o755)
        for name, mode in (("readable", 0o644), ("unreadable", 0)):
            (work / name).mkdir(mode=0o755)
            (work / name).chmod(0o755)
            (work / name / "processor.yaml").write_text(GOOD, encoding="utf-8")
            (work / name / "processor.yaml").chmod(mode)
        result = subprocess.run(
            [*UNPRIVILEGED, sys.executable, "-c", LOAD, str(work / "readable"), str(work / "unreadable")],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        readable, unreadable = result.stdout.splitlines()
    finally:
        shutil.rmtree(work)
    assert result.returncode == 0, result.stderr
    assert "does not exist" in readable  # read and validated: the same user can reach the folder
    assert unreadable == f"{work}/unreadable/processor.yaml: cannot read: Permission denied"


def test_a_directory_named_processor_yaml_is_refused(tmp_path: Path) -> None:
    (tmp_path / "processor.yaml").mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        load_manifest(tmp_path)

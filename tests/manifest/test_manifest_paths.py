"""Files the build copies: they exist and stay inside the processor directory (no '..', no absolute
path, no symlink leading out, also deep inside a copied directory); COTS may come from an https mirror."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from manifest_cases import GOOD, edit, locate

from imagekit.errors import Problem
from imagekit.manifest import load_manifest

SOURCE = "source: cots/vendor-tool-2.11.0.tar.gz"
REQUIREMENTS = "requirements: requirements.lock"
COPY_SRC = "{from: src/,"


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        (SOURCE, "source: «cots/missing.tar.gz", "cots[0].source", "'cots/missing.tar.gz' does not exist"),
        (SOURCE, "source: «/etc/passwd", "cots[0].source", "relative to the processor directory"),
        (SOURCE, "source: «../../secret.tgz", "cots[0].source", "'..' is not allowed"),
        (SOURCE, "source: «cots", "cots[0].source", "'cots' is not a file"),
        (SOURCE, "source: «http://mirror.example.org/t.tgz", "cots[0].source", "or an https:// URL"),
        (SOURCE, "source: «file:///etc/passwd", "cots[0].source", "or an https:// URL"),
        (SOURCE, "source: «https:///no-host.tgz", "cots[0].source", "or an https:// URL"),
        (
            REQUIREMENTS,
            "requirements: «requirements.txt",
            "dependencies.python.requirements",
            "does not exist",
        ),
        (REQUIREMENTS, "requirements: «src", "dependencies.python.requirements", "'src' is not a file"),
        (COPY_SRC, "{from: «source/,", "build.copy[0].from", "'source/' does not exist"),
        (COPY_SRC, "{from: «src/../../,", "build.copy[0].from", "'..' is not allowed"),
        ("{from: conf/,", "{from: «/etc/,", "app.copy[1].from", "relative to the processor directory"),
        ("{from: conf/,", "{from: «https://example.org/conf/,", "app.copy[1].from", "got the URL"),
        # what render refuses, validate refuses first
        ("{from: conf/,", "{from: «.,", "app.copy[1].from", "name a file or folder inside"),
        ("{from: conf/,", "{from: «./,", "app.copy[1].from", "name a file or folder inside"),
        ("{from: conf/,", "{from: «site/,", "app.copy[1].from", "site is a name imagekit writes itself"),
        (COPY_SRC, "{from: «Dockerfile,", "build.copy[0].from", "Dockerfile is a name imagekit writes"),
        (REQUIREMENTS, "requirements: «./.dockerignore", "dependencies.python.requirements", "imagekit"),
        (SOURCE, "source: «https://user@mirror.example.org/t.tgz", "cots[0].source", "credentials"),
        (SOURCE, "source: «https://mirror.example.org/a b.tgz", "cots[0].source", "a URL has no spaces"),
        (SOURCE, "source: «https://[mirror/t.tgz", "cots[0].source", "not a valid URL"),
        (SOURCE, "source: «https://mirror.example.org/t$(id).tgz", "cots[0].source", "name the archive"),
    ],
)
def test_local_path_rules(
    old: str, new: str, field: str, message: str, problems: Callable[..., list[Problem]]
) -> None:
    line, column, text = locate(edit(GOOD, old, new))
    found = problems(text)
    assert [(p.line, p.column, p.field) for p in found] == [(line, column, field)]
    assert message in found[0].message


def test_symlink_leading_outside_is_refused(
    proc_dir: Path, tmp_path: Path, problems: Callable[..., list[Problem]]
) -> None:
    outside = tmp_path / "outside.tgz"
    outside.write_bytes(b"secret")
    (proc_dir / "cots" / "escape.tgz").symlink_to(outside)
    line, column, text = locate(edit(GOOD, SOURCE, "source: «cots/escape.tgz"))
    (found,) = problems(text)
    assert (found.line, found.column, found.field) == (line, column, "cots[0].source")
    assert "symlink leading outside the processor directory" in found.message


def test_symlink_deep_in_a_copied_directory_is_refused(
    proc_dir: Path, problems: Callable[..., list[Problem]]
) -> None:
    (proc_dir / "python" / "olci_l1" / "keys").symlink_to(Path.home())
    line, column, text = locate(edit(GOOD, "{from: python/,", "{from: «python/,"))
    (found,) = problems(text)
    assert (found.line, found.column, found.field) == (line, column, "app.copy[0].from")
    assert found.message == "'python/olci_l1/keys' is a symlink leading outside the processor directory"


def test_symlink_loop_is_a_problem_not_a_crash(
    proc_dir: Path, problems: Callable[..., list[Problem]]
) -> None:
    (proc_dir / "loop").symlink_to(proc_dir / "loop")
    (found,) = problems(edit(GOOD, SOURCE, "source: loop"))
    assert found.field == "cots[0].source"


def test_symlinks_inside_the_directory_are_fine(proc_dir: Path, write: Callable[[str], Path]) -> None:
    (proc_dir / "cots" / "current.tgz").symlink_to(proc_dir / "cots" / "vendor-tool-2.11.0.tar.gz")
    (proc_dir / "python" / "olci_l1" / "conf").symlink_to(proc_dir / "conf")
    load_manifest(write(edit(GOOD, SOURCE, "source: cots/current.tgz")))


def test_https_mirror_and_a_directory_are_fine(write: Callable[[str], Path]) -> None:
    text = edit(GOOD, SOURCE, "source: https://mirror.example.org/vendor-tool-2.11.0.tar.gz")
    load_manifest(write(edit(text, "{from: conf/,", "{from: ./conf,")))


def test_paths_are_relative_to_the_processor_directory_not_the_working_directory(
    proc_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(proc_dir.parent)
    assert load_manifest(Path(proc_dir.name)).directory == Path(proc_dir.name)


def test_a_local_archive_name_render_cannot_write_is_refused(
    proc_dir: Path, problems: Callable[..., list[Problem]]
) -> None:
    (proc_dir / "cots" / "vendor tool.tgz").write_text("test")
    line, column, text = locate(edit(GOOD, SOURCE, "source: «cots/vendor tool.tgz"))
    (found,) = problems(text)
    assert (found.line, found.column, found.field) == (line, column, "cots[0].source")
    assert "name the archive with letters, digits" in found.message

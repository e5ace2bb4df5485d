"""render() writes exactly the build context, atomically, and says where a template failed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.config import SiteSettings
from imagekit.errors import InputError, TemplateError
from imagekit.manifest import load_manifest
from imagekit.render import render, templates, writer

from .render_parts import EXAMPLES, SOURCE, Render, base_for

NO_CA = SiteSettings(ca_certificates=[])


def test_the_context_holds_only_what_the_dockerfile_uses(render_example: Render) -> None:
    result = render_example("olci-l1-demo")
    assert result.context_dir / "Dockerfile" == result.definition
    assert result.files == [
        ".dockerignore",
        "Dockerfile",
        "c/Makefile",
        "c/olci_calibrate.c",
        "conf/olci-l1.toml",
        "cots/olci-lut.tar",
        "foundation.json",
        "python/pyproject.toml",
        "python/src/olci_tools/__init__.py",
        "site/ca-1.crt",
    ]
    assert "processor.yaml" not in result.files and "README.md" not in result.files
    ignore = (result.context_dir / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[2:8] == ["*", "!c", "!conf", "!cots/olci-lut.tar", "!python", "!site/ca-1.crt"]


def test_local_caches_stay_out_and_modes_are_normalised(
    render_example: Render, copy_processor: Callable[[str], Path]
) -> None:
    directory = copy_processor("sst-cdr-demo")
    (directory / "package" / "sst_cdr" / "__pycache__").mkdir()
    (directory / "package" / "sst_cdr" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (directory / "package" / ".pytest_cache").mkdir()
    (directory / "package" / "sst_cdr" / "__init__.py").chmod(0o664)
    result = render_example(directory)
    assert not [f for f in result.files if "__pycache__" in f or "pytest_cache" in f]
    assert (result.context_dir / "package" / "sst_cdr" / "__init__.py").stat().st_mode & 0o777 == 0o644


def test_large_files_are_hard_linked(
    render_example: Render, copy_processor: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = copy_processor("olci-l1-demo")
    monkeypatch.setattr(writer, "LINK_THRESHOLD", 300)
    source = directory / "c" / "olci_calibrate.c"
    result = render_example(directory)
    copied = result.context_dir / "c" / "olci_calibrate.c"
    assert os.path.samefile(source, copied)
    small = result.context_dir / "conf" / "olci-l1.toml"
    assert small.stat().st_nlink == 1, "small files are copied"


def test_a_wrong_cots_checksum_fails_before_any_build(
    render_example: Render, copy_processor: Callable[[str], Path]
) -> None:
    directory = copy_processor("olci-l1-demo")
    with (directory / "cots" / "olci-lut-1.0.tar.gz").open("ab") as archive:
        archive.write(b"tampered")
    with pytest.raises(InputError, match=r"cots\[0\]\.sha256: cots/olci-lut-1.0.tar.gz has sha256 "):
        render_example(directory)


def test_a_failed_render_leaves_out_dir_as_it_was(
    render_example: Render, copy_processor: Callable[[str], Path]
) -> None:
    directory = copy_processor("olci-l1-demo")
    manifest = load_manifest(directory)
    good = render_example(directory)
    before = {p: p.read_bytes() for p in good.context_dir.rglob("*") if p.is_file()}
    (directory / "conf" / "olci-l1.toml").write_text("changed = true\n")
    (directory / "cots" / "olci-lut-1.0.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(InputError):
        render(manifest, good.context_dir, base=base_for(manifest), site=NO_CA, source=SOURCE)
    after = {p: p.read_bytes() for p in good.context_dir.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in good.context_dir.parent.iterdir() if p.name.startswith(".")] == []


def test_a_second_render_replaces_the_first(tmp_path: Path) -> None:
    manifest = load_manifest(EXAMPLES["sst-cdr-demo"])
    out = tmp_path / "ctx"
    render(manifest, out, base=base_for(manifest), site=NO_CA, source=SOURCE)
    (out / "stale.txt").write_text("left from an old render\n")
    result = render(manifest, out, base=base_for(manifest), site=NO_CA, source=SOURCE)
    assert not (out / "stale.txt").exists()
    assert result.context_dir == out


def test_a_folder_imagekit_did_not_render_is_never_replaced(tmp_path: Path) -> None:
    manifest = load_manifest(EXAMPLES["sst-cdr-demo"])
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious\n")
    with pytest.raises(InputError, match="not rendered by imagekit"):
        render(manifest, home, base=base_for(manifest), site=NO_CA, source=SOURCE)
    assert (home / "thesis.tex").read_text() == "precious\n"
    with pytest.raises(InputError, match="holds the processor directory"):
        render(manifest, EXAMPLES["sst-cdr-demo"].parent, base=base_for(manifest), site=NO_CA, source=SOURCE)


def test_a_template_error_names_template_line_and_field(
    render_example: Render, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "base_templates"
    shutil.copytree(templates.templates_root(), broken)
    apt = broken / "docker" / "Dockerfile.j2"
    text = apt.read_text(encoding="utf-8")
    apt.write_text(
        text.replace("{{ pm.install(runtime_packages) }}", "{{ pm.install(runtime_packages.nope) }}")
    )
    line = next(i for i, t in enumerate(apt.read_text().splitlines(), 1) if "runtime_packages.nope" in t)
    monkeypatch.setattr(templates, "templates_root", lambda: broken)
    with pytest.raises(TemplateError) as raised:
        render_example("el9-demo")
    message = raised.value.message
    assert message.startswith("base_templates/docker/dnf.j2:"), "where it failed, inside the macro"
    assert f"called from base_templates/docker/Dockerfile.j2:{line})" in message, "and the line calling it"
    assert message.endswith("(manifest field system_packages.runtime)")


def test_a_template_error_inside_a_loop_names_the_loop_field(
    render_example: Render, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "base_templates"
    shutil.copytree(templates.templates_root(), broken)
    dockerfile = broken / "docker" / "Dockerfile.j2"
    dockerfile.write_text(dockerfile.read_text().replace("ADD {{ item.source }} /", "ADD {{ item.nope }} /"))
    monkeypatch.setattr(templates, "templates_root", lambda: broken)
    with pytest.raises(TemplateError, match=r"Dockerfile\.j2:\d+: .*nope.* \(manifest field cots\)$"):
        render_example("olci-l1-demo")

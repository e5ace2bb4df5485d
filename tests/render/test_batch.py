"""Rendering many processors in one process gives, byte for byte, what rendering each alone gives.

The processors live in one git repository, as a mission keeps them; the revision is read once per
work tree, so a processor in a repository of its own must still get its own revision.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from imagekit.catalog import BaseRef, load_catalog, record_base
from imagekit.cli import main
from imagekit.config import SiteSettings
from imagekit.errors import InputError
from imagekit.render import render_processor, render_processors

from .render_parts import DIGEST, EXAMPLES

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
    "GIT_AUTHOR_DATE": "2024-03-05T06:07:08Z",
    "GIT_COMMITTER_DATE": "2024-03-05T06:07:08Z",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
}


def commit_all(repo: Path, message: str) -> str:
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", message], ["rev-parse", "HEAD"]):
        result = subprocess.run(
            ["git", "-C", str(repo), *args], env=GIT_ENV, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def tree(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file below `folder`: its mode and bytes (a symlink: its target)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            files[str(path.relative_to(folder))] = (info.st_mode, os.readlink(path).encode())
        elif stat.S_ISREG(info.st_mode):
            files[str(path.relative_to(folder))] = (info.st_mode, path.read_bytes())
    return files


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A site that pinned every catalog base at a fixed digest."""
    data = tmp_path / "data"
    for name in load_catalog().profiles:
        record_base(data, name, BaseRef(image=f"127.0.0.1:5000/imagekit/base/{name}", digest=DIGEST))
    return data


@pytest.fixture
def mission(tmp_path: Path) -> list[Path]:
    """Every example in one committed repository."""
    repo = tmp_path / "mission"
    for name, source in EXAMPLES.items():
        shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns(".imagekit"))
    commit_all(repo, "mission")
    return [repo / name for name in EXAMPLES]


def test_many_in_one_process_are_byte_identical_to_each_alone(
    tmp_path: Path, mission: list[Path], data_dir: Path, site: SiteSettings
) -> None:
    batch = render_processors(mission, tmp_path / "batch", data_dir=data_dir, site=site)
    assert [r.result.context_dir for r in batch] == [tmp_path / "batch" / d.name for d in mission]
    for directory, rendered in zip(mission, batch, strict=True):
        alone = render_processor(directory, tmp_path / "alone" / directory.name, data_dir=data_dir, site=site)
        assert alone.source == rendered.source
        assert tree(alone.result.context_dir) == tree(rendered.result.context_dir), directory.name
        assert alone.result.files == rendered.result.files
        assert rendered.source.revision != "unknown"


def test_without_an_output_each_renders_beside_its_manifest(
    mission: list[Path], data_dir: Path, site: SiteSettings
) -> None:
    rendered = render_processors(mission[:2], data_dir=data_dir, site=site, target="docker")
    assert [r.result.context_dir for r in rendered] == [d / ".imagekit" / "docker" for d in mission[:2]]
    assert all((d / ".imagekit" / "docker" / "Dockerfile").is_file() for d in mission[:2])


def test_a_processor_in_a_repository_of_its_own_gets_its_own_revision(
    tmp_path: Path, mission: list[Path], data_dir: Path, site: SiteSettings
) -> None:
    nested = mission[0].parent / "vendored" / "olci-l1-demo"
    shutil.copytree(EXAMPLES["olci-l1-demo"], nested, ignore=shutil.ignore_patterns(".imagekit"))
    (nested / "conf" / "extra.toml").write_text("x = 1\n", encoding="utf-8")
    own = commit_all(nested, "vendored")
    rendered = render_processors([mission[1], nested], tmp_path / "out", data_dir=data_dir, site=site)
    assert rendered[1].source.revision == own
    assert rendered[0].source.revision != own
    assert own in (tmp_path / "out" / "olci-l1-demo" / "Dockerfile").read_text(encoding="utf-8")


def test_two_processors_of_one_name_are_refused_before_anything_is_written(
    tmp_path: Path, mission: list[Path], data_dir: Path, site: SiteSettings
) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(mission[0], twin, ignore=shutil.ignore_patterns(".imagekit"))
    with pytest.raises(InputError, match="is also the name in") as caught:
        render_processors([mission[1], mission[0], twin], tmp_path / "out", data_dir=data_dir, site=site)
    assert caught.value.exit_code == 2
    assert not (tmp_path / "out").exists()


def test_the_command_renders_several_into_name_folders(
    tmp_path: Path,
    mission: list[Path],
    data_dir: Path,
    site: SiteSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("IMAGEKIT_PATHS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("IMAGEKIT_SITE_CA_CERTIFICATES", site.ca_certificates[0])
    monkeypatch.setenv("IMAGEKIT_SITE_APT_MIRROR", site.apt_mirror)
    monkeypatch.setenv("IMAGEKIT_SITE_PIP_INDEX_URL", site.pip_index_url)
    monkeypatch.chdir(tmp_path)
    assert main(["render", *map(str, mission[:3]), "-o", str(tmp_path / "cli")]) == 0
    assert main(["render", str(mission[2]), "-o", str(tmp_path / "one")]) == 0
    shown = capsys.readouterr().out
    assert f"rendered {tmp_path / 'cli' / mission[0].name} (" in shown
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(d.name for d in mission[:3])
    assert tree(tmp_path / "cli" / mission[2].name) == tree(tmp_path / "one")

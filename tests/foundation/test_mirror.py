"""The site's Debian mirror: read from the host's apt sources in both formats, or site.apt_mirror."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imagekit.catalog import load_catalog
from imagekit.config import Profile, SiteSettings
from imagekit.devenv.bases import recipe
from imagekit.errors import ProfileError
from imagekit.manifest import scaffold
from imagekit.mirror import (
    AptSource,
    DebianMirror,
    host_sources,
    mirror_for,
    mirror_from_setting,
    parse_deb822,
    parse_one_line,
    site_mirror,
)
from imagekit.pipeline import build_processor

ONE_LINE = """\
# the site mirror
deb http://mirror.example.org/debian/ bookworm main contrib   # trailing comment
deb-src http://src.example.org/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.example.org/debian bookworm-updates main
#deb http://old.example.org/debian bookworm main
deb [ arch=amd64 ] https://security.example.org/debian-security bookworm-security main
deb http://apt.vendor.example.org/tools stable main
"""

DEB822 = """\
# comment before the first stanza
Types: deb deb-src
URIs: http://mirror.example.org/debian http://backup.example.org/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGPL0BUBEADmW5NdOOHwPIJlgPu6JDcKw/NZJPR8lsD3K87ZM18gzyQZJD+w
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb
URIs: http://disabled.example.org/debian
Suites: bookworm
Components: main
Enabled: no

types: deb
uris: http://mirror.example.org/debian-security
suites: bookworm-security
components: main
"""


def test_one_line_format_is_parsed_as_apt_reads_it() -> None:
    assert parse_one_line(ONE_LINE) == [
        AptSource(
            uri="http://mirror.example.org/debian", suites=("bookworm",), components=("main", "contrib")
        ),
        AptSource(uri="http://mirror.example.org/debian", suites=("bookworm-updates",), components=("main",)),
        AptSource(
            uri="https://security.example.org/debian-security",
            suites=("bookworm-security",),
            components=("main",),
        ),
        AptSource(uri="http://apt.vendor.example.org/tools", suites=("stable",), components=("main",)),
    ]


def test_deb822_format_is_parsed_as_apt_reads_it() -> None:
    suites = ("bookworm", "bookworm-updates")
    assert parse_deb822(DEB822) == [
        AptSource(uri="http://mirror.example.org/debian", suites=suites, components=("main",)),
        AptSource(uri="http://backup.example.org/debian", suites=suites, components=("main",)),
        AptSource(
            uri="http://mirror.example.org/debian-security",
            suites=("bookworm-security",),
            components=("main",),
        ),
    ]


def test_the_mirror_is_the_one_serving_the_suite_with_its_security_archive() -> None:
    found = [(Path("a.list"), source) for source in parse_one_line(ONE_LINE)]
    assert mirror_for(found, "bookworm") == DebianMirror(
        archive="http://mirror.example.org/debian",
        security="https://security.example.org/debian-security",
        origin="a.list",
    )
    assert mirror_for(found, "trixie") is None, "a vendor's repository is no Debian mirror"


def apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_the_host_sources_are_read_from_both_places_in_apts_order(tmp_path: Path) -> None:
    root = apt_dir(
        tmp_path,
        {
            "sources.list.d/debian.sources": DEB822,
            "sources.list.d/vendor.list": "deb http://apt.vendor.example.org/tools stable main\n",
            "sources.list.d/old.list.disabled": "deb http://old.example.org/debian bookworm main\n",
        },
    )
    found = host_sources(root)
    assert [path.name for path, _ in found] == ["debian.sources"] * 3 + ["vendor.list"]
    mirror = site_mirror("", "bookworm", root)
    assert (mirror.archive, mirror.security) == (
        "http://mirror.example.org/debian",
        "http://mirror.example.org/debian-security",
    )
    assert mirror.origin == str(root / "sources.list.d" / "debian.sources")
    (root / "sources.list").write_text(
        "deb http://first.example.org/debian bookworm main\n", encoding="utf-8"
    )
    assert site_mirror("", "bookworm", root).archive == "http://first.example.org/debian"


def test_site_apt_mirror_overrides_the_host(tmp_path: Path) -> None:
    root = apt_dir(tmp_path, {"sources.list.d/debian.sources": DEB822})
    mirror = site_mirror("http://site.example.org/debian/", "bookworm", root)
    assert mirror == DebianMirror(
        archive="http://site.example.org/debian",
        security="http://site.example.org/debian-security",
        origin="site.apt_mirror",
    )
    assert mirror.sources("bookworm") == [
        "deb http://site.example.org/debian bookworm main",
        "deb http://site.example.org/debian bookworm-updates main",
        "deb http://site.example.org/debian-security bookworm-security main",
    ]
    other = site_mirror("http://site.example.org/deb", "bookworm", root)
    assert other.sources("bookworm") == [
        "deb http://site.example.org/deb bookworm main",
        "deb http://site.example.org/deb bookworm-updates main",
    ], "no security archive is guessed for a mirror that does not end in /debian"


def test_no_host_sources_and_no_setting_says_to_set_site_apt_mirror(tmp_path: Path) -> None:
    root = apt_dir(
        tmp_path, {"sources.list.d/vendor.list": "deb http://apt.vendor.example.org/x stable main\n"}
    )
    with pytest.raises(ProfileError, match=r"no Debian mirror for bookworm.*set site\.apt_mirror"):
        site_mirror("", "bookworm", root)
    with pytest.raises(ProfileError, match=r"set site\.apt_mirror"):
        site_mirror("", "bookworm", tmp_path / "no-apt-here")


def test_a_changed_mirror_changes_the_bootstrap_recipe() -> None:
    entry = load_catalog().profiles["debian-12"]

    def recipe_with(mirror: str) -> str:
        return recipe(Profile(site=SiteSettings(apt_mirror=mirror)), entry)

    assert recipe_with("http://a.example.org/debian") == recipe_with("http://a.example.org/debian/")
    assert recipe_with("http://a.example.org/debian") != recipe_with("http://b.example.org/debian")


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.registry
def test_an_image_rendered_with_site_apt_mirror_installs_from_it(
    tmp_path: Path, site_profile: Profile, local_env: dict[str, object], docker_cleanup: list[str]
) -> None:
    """The rendered sources are real apt configuration: apt-get update and install work with them."""
    mirror = site_mirror(site_profile.site.apt_mirror, "bookworm")
    profile = site_profile.model_copy(
        update={"site": site_profile.site.model_copy(update={"apt_mirror": mirror.archive})}
    )
    directory = tmp_path / "mirror-demo"
    scaffold(directory, "mirror-demo")
    manifest = directory / "processor.yaml"
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace("  runtime: []", "  runtime: [bzip2]", 1), encoding="utf-8")
    docker_cleanup += ["mirror-demo:0.1.0"]
    build_processor(directory, profile, on_line=lambda line: None)
    shown = subprocess.run(
        [
            profile.engine.docker,
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "sh",
            "mirror-demo:0.1.0",
            "-c",
            "cat /etc/apt/sources.list; ls /etc/apt/sources.list.d; command -v bzip2",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert shown[:3] == mirror_from_setting(mirror.archive).sources("bookworm")
    assert shown[-1] == "/usr/bin/bzip2"

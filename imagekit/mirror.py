"""The site's Debian mirror, and the apt sources imagekit writes from it.

A site's machine already knows its mirror: by default the bases are bootstrapped from the mirror
the host's own apt sources name for the suite (`/etc/apt/sources.list` one-line format,
`sources.list.d/*.list` and deb822 `*.sources`), and `site.apt_mirror` overrides it. The same
lines go into the bootstrapped base and, when `site.apt_mirror` is set, into every rendered image,
so a base and the images built on it fetch from one mirror. No public mirror host is built in.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from imagekit.errors import ProfileError

APT_DIR = Path("/etc/apt")


class AptSource(BaseModel):
    """One enabled binary-package source: a mirror URI and what it serves."""

    model_config = ConfigDict(frozen=True)
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


class DebianMirror(BaseModel):
    """Where a suite and its security updates come from, and who said so."""

    model_config = ConfigDict(frozen=True)
    archive: str
    security: str = ""
    """The security archive; "" when none is known, so bases get no security updates."""
    origin: str
    """The setting or host file it was taken from, for messages."""

    def sources(self, suite: str) -> list[str]:
        """One-line apt sources: the suite, its point-release updates and its security archive."""
        lines = [f"deb {self.archive} {suite} main", f"deb {self.archive} {suite}-updates main"]
        if self.security:
            lines.append(f"deb {self.security} {suite}-security main")
        return lines


def parse_one_line(text: str) -> list[AptSource]:
    """`deb [options] uri suite component...` lines; deb-src and comments are skipped."""
    found = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb ") and not line.startswith("deb\t"):
            continue
        rest = line[3:].strip()
        if rest.startswith("["):
            if "]" not in rest:
                continue
            rest = rest.split("]", 1)[1]
        words = rest.split()
        if len(words) >= 2:
            found.append(AptSource(uri=words[0].rstrip("/"), suites=(words[1],), components=tuple(words[2:])))
    return found


def _stanzas(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs as {lower-cased field: value}; continuation lines are kept but unused."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
        elif raw[0] in " \t":
            if key:
                current[key] += "\n" + raw.strip()
        elif ":" in raw:
            key, value = raw.split(":", 1)
            key = key.strip().lower()
            current[key] = value.strip()
    return stanzas


def parse_deb822(text: str) -> list[AptSource]:
    """deb822 `.sources` stanzas with Types: deb and not `Enabled: no`; one entry per URI."""
    found = []
    for stanza in _stanzas(text):
        if "deb" not in stanza.get("types", "").split():
            continue
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        suites = tuple(stanza.get("suites", "").split())
        components = tuple(stanza.get("components", "").split())
        for uri in stanza.get("uris", "").split():
            if suites:
                found.append(AptSource(uri=uri.rstrip("/"), suites=suites, components=components))
    return found


def host_sources(apt_dir: Path = APT_DIR) -> list[tuple[Path, AptSource]]:
    """Every enabled source of the host, in the order apt reads the files."""
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in {".list", ".sources"})
    found = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ProfileError(f"{path}: cannot read the host's apt sources: {exc}") from exc
        parse = parse_deb822 if path.suffix == ".sources" else parse_one_line
        found += [(path, source) for source in parse(text)]
    return found


def mirror_for(found: list[tuple[Path, AptSource]], suite: str) -> DebianMirror | None:
    """The mirror serving `suite` main among `found`, with the one serving `<suite>-security`."""
    archive = next(((path, s) for path, s in found if suite in s.suites and "main" in s.components), None)
    if archive is None:
        return None
    security = next((s.uri for _, s in found if f"{suite}-security" in s.suites), "")
    return DebianMirror(archive=archive[1].uri, security=security, origin=str(archive[0]))


def mirror_from_setting(url: str) -> DebianMirror:
    """site.apt_mirror: its security archive is `<mirror>-security` when it ends in /debian."""
    archive = url.strip().rstrip("/")
    security = archive + "-security" if archive.endswith("/debian") else ""
    return DebianMirror(archive=archive, security=security, origin="site.apt_mirror")


def site_mirror(apt_mirror: str, suite: str, apt_dir: Path = APT_DIR) -> DebianMirror:
    """site.apt_mirror when set, else the host's mirror for `suite`, else a clear error."""
    if apt_mirror.strip():
        return mirror_from_setting(apt_mirror)
    found = mirror_for(host_sources(apt_dir), suite)
    if found is None:
        raise ProfileError(
            f"no Debian mirror for {suite}: the host's apt sources ({apt_dir}/sources.list, "
            f"{apt_dir}/sources.list.d/) name none; set site.apt_mirror in the profile "
            "(or IMAGEKIT_SITE_APT_MIRROR), e.g. http://mirror.example.org/debian"
        )
    return found

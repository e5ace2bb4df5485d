"""The published flat equals `docker export` of a container of the same image, file by file."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit import cvmfs
from imagekit.config import Profile
from imagekit.cvmfs import stream
from imagekit.cvmfs.flatten import Limits
from imagekit.cvmfs.source import fetch_image
from imagekit.registry import RegistryClient

from .images import E, differences, export_rows, inode_groups, layer, push_layers, skopeo_push, tree_rows

pytestmark = [pytest.mark.engine, pytest.mark.registry]

HAND_MADE = [
    layer(
        E("bin", "d", mode=0o755),
        E("bin/tool", "f", "#!/bin/sh\necho tool\n", 0o755),
        E("data", "d", mode=0o755),
        E("data/opaque", "d", mode=0o755),
        E("data/opaque/old", "f", "old"),
        E("data/opaque/sub", "d", mode=0o700, uid=7, gid=8),
        E("data/opaque/sub/deep", "f", "deep"),
        E("data/gone", "f", "gone"),
        E("data/gone-dir", "d"),
        E("data/gone-dir/x", "f", "x"),
        E("data/shared", "f", "shared content", 0o640, 10, 20),
        E("data/link-rel", "l", "shared"),
        E("data/link-abs", "l", "/etc/passwd"),
        E("data/link-dangling", "l", "../nowhere"),
        E("data/to-file", "d"),
        E("data/to-dir", "f", "file"),
        E("data/suid", "f", "suid", 0o4755),
        E("data/sgid-dir", "d", mode=0o2775, gid=100),
        E("dev", "d", mode=0o755),
        E("dev/null", "c", mode=0o666),
        E("data/fifo", "p"),
    ),
    layer(
        E("data/opaque", "d", mode=0o750),
        E("data/opaque/.wh..wh..opq"),
        E("data/opaque/new", "f", "new"),
        E("data/.wh.gone"),
        E("data/.wh.gone-dir"),
        E("data/shared-again", "f", "shared content", 0o640, 10, 20),
        E("data/hardlink-same-layer", "h", "data/shared-again", 0o640, 10, 20),
        E("data/.wh.to-file"),
        E("data/to-file", "f", "now a file"),
        E("data/.wh.to-dir"),
        E("data/to-dir", "d", mode=0o711),
        E("data/to-dir/inside", "f", "inside"),
        E("data/link-rel", "l", "opaque/new"),
        E("bin/tool", "f", "#!/bin/sh\necho tool v2\n", 0o755),
        E("bin/tool-alias", "h", "bin/tool", 0o755),
    ),
    layer(
        E("data/.wh.shared"),
        E("data/late", "f", "late", 0o600, 1000, 1000),
    ),
]


def _publish(profile: Profile, repository: str, tag: str) -> cvmfs.PublishResult:
    return cvmfs.publish(profile, f"{repository}:{tag}", skip_reason="test image")


def _compare(profile: Profile, image: str, result: cvmfs.PublishResult) -> None:
    flat = Path(profile.cvmfs_root) / result.publication.flat
    skipped = {line.split(": /", 1)[1].split(" (")[0] for line in result.skipped}
    exported, flattened = export_rows(profile.engine.docker, image), tree_rows(flat)
    assert len(set(exported) & set(flattened)) >= 15
    problems = differences(exported, flattened, skipped)
    assert problems == [], "\n".join(problems[:30])
    flattened["data/late"] = ("f", 0o644, 0, 0, 4, "0" * 64)  # the comparison does see a difference
    assert differences(exported, flattened, skipped)


def test_hand_made_layers_equal_docker_export(
    tree_profile: Profile, registry_client: RegistryClient, docker_cleanup: list[str]
) -> None:
    repository = f"{tree_profile.registry.project}/layers"
    push_layers(registry_client, repository, "1.0", HAND_MADE)
    image = f"{tree_profile.registry.url}/{repository}:1.0"
    subprocess.run([tree_profile.engine.docker, "pull", "-q", image], check=True, capture_output=True)
    docker_cleanup.append(image)

    result = _publish(tree_profile, repository, "1.0")

    _compare(tree_profile, image, result)
    flat = Path(tree_profile.cvmfs_root) / result.publication.flat
    assert inode_groups(flat) == {
        frozenset({"bin/tool", "bin/tool-alias"}),
        frozenset({"data/shared-again", "data/hardlink-same-layer"}),
    }
    assert any("/dev/null (device node" in line for line in result.skipped)
    assert any("/data/fifo (FIFO" in line for line in result.skipped)
    assert any("/data/suid: setuid/setgid kept" in line for line in result.warnings)


def test_docker_built_image_equals_docker_export(
    tree_profile: Profile,
    local_env: dict[str, object],
    docker_cleanup: list[str],
    tmp_path: Path,
    registry_client: RegistryClient,
) -> None:
    """Also: Docker's layers carry their files' parent directories, so the tar for `cvmfs_server ingest`
    is sent as they are read once (`stream.stream`, no `ReadAgain`), and it is this same flat."""
    base = local_env["debian-12"].pinned  # type: ignore[attr-defined]
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {base}\n"
        "RUN mkdir -p /data/opaque/sub /data/keep && echo old > /data/opaque/sub/old && echo a > /data/gone"
        " && echo shared > /data/keep/source && ln -s ../keep/source /data/link"
        " && mkdir /data/to-file && echo f > /data/to-dir\n"
        "RUN rm /data/gone && rm -rf /data/opaque && mkdir /data/opaque && echo new > /data/opaque/new"
        " && ln /data/keep/source /data/hardlink && cp /bin/true /data/suid && chmod 4755 /data/suid"
        " && chmod 2775 /data/keep && chown 1234:5678 /data/keep/source"
        " && rmdir /data/to-file && echo file > /data/to-file && rm /data/to-dir && mkdir /data/to-dir"
        " && rm -rf /usr/share/doc /etc/cron.daily\n"
        'ENV GREETING="hello world" LANG=C.UTF-8\n'
        'ENTRYPOINT ["/bin/echo"]\nCMD ["from", "the image"]\n'
    )
    tag = f"cvmfs-test-{tree_profile.registry.project}:1"
    docker_cleanup.append(tag)
    built = subprocess.run(
        [tree_profile.engine.docker, "build", "-q", "-t", tag, str(context)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr[-2000:]
    repository = f"{tree_profile.registry.project}/built"
    skopeo_push(tag, tree_profile.registry.url, repository, "1.0")

    result = _publish(tree_profile, repository, "1.0")

    _compare(tree_profile, tag, result)
    flat = Path(tree_profile.cvmfs_root) / result.publication.flat
    assert (flat / "data/suid").stat().st_mode & 0o4000
    assert not (flat / "usr/share/doc").exists()
    assert (flat / "data/hardlink").stat().st_ino == (flat / "data/keep/source").stat().st_ino

    image = fetch_image(registry_client, tree_profile.registry.url, repository, "1.0")
    limits = Limits(tree_profile.cvmfs.max_entries, tree_profile.cvmfs.max_bytes)
    with (tmp_path / "flat.tar").open("wb") as out:
        stream.stream(image, registry_client, "new/flat", None, limits, out, ["new"], lambda _: None)
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(["tar", "-xpf", tmp_path / "flat.tar", "-C", extracted, "--numeric-owner"], check=True)
    assert tree_rows(extracted / "new/flat") == tree_rows(flat)


def test_published_image_runs_from_the_tree_with_bwrap(
    tree_profile: Profile,
    local_env: dict[str, object],
    docker_cleanup: list[str],
    tmp_path: Path,
    require_part: Callable[[str], None],
) -> None:
    """No container daemon: the flat is the root of a bubblewrap sandbox, run as Apptainer would."""
    if shutil.which("bwrap") is None:
        require_part("bwrap is missing: apt-get install -y bubblewrap (scripts/install does it)")
    base = local_env["debian-12"].pinned  # type: ignore[attr-defined]
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {base}\n"
        "RUN printf '#!/bin/sh\\necho \"processor $1: $GREETING\"\\n' > /usr/local/bin/proc"
        " && chmod 755 /usr/local/bin/proc\n"
        'ENV GREETING="hello world"\nENTRYPOINT ["/usr/local/bin/proc"]\nCMD ["default"]\n'
    )
    tag = f"cvmfs-test-{tree_profile.registry.project}:bwrap"
    docker_cleanup.append(tag)
    built = subprocess.run(
        [tree_profile.engine.docker, "build", "-q", "-t", tag, str(context)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr[-2000:]
    repository = f"{tree_profile.registry.project}/runs"
    skopeo_push(tag, tree_profile.registry.url, repository, "1.0")
    flat = Path(tree_profile.cvmfs_root) / _publish(tree_profile, repository, "1.0").publication.flat
    sandbox = ["bwrap", "--ro-bind", str(flat), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    sandbox += ["--unshare-all", "--clearenv", "--"]

    def run(*args: str) -> str:
        done = subprocess.run([*sandbox, *args], capture_output=True, text=True, check=False, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run("/.singularity.d/actions/run") == "processor default: hello world"
    assert run("/.singularity.d/actions/run", "smoke") == "processor smoke: hello world"
    assert run("/.singularity.d/actions/exec", "/bin/sh", "-c", "echo $PATH") == (
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )

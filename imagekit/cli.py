"""The `imagekit` command: parses arguments, loads the profile, calls one step, maps errors to exit codes.

Exit codes: 0 done, 1 tool or infrastructure failure, 2 bad input or usage, 3 a policy said no.
Every step is imported inside the command that uses it, and annotations are real objects (typer
would otherwise evaluate each string on every start): `imagekit --help` and `validate` start fast.
"""

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from imagekit.errors import ImagekitError, InputError

if TYPE_CHECKING:
    from imagekit.config import LoadedProfile, Profile
    from imagekit.render import SourceInfo

app = typer.Typer(
    help="From a scientist's processor.yaml to identical images and CVMFS trees in every data centre.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the effective site profile.", no_args_is_help=True)
dev_app = typer.Typer(
    help="The embedded local environment (engine, registry, base images).", no_args_is_help=True
)
base_app = typer.Typer(help="Base images this site builds on.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(dev_app, name="dev")
app.add_typer(base_app, name="base")
ci_app = typer.Typer(
    help="GitLab CI: generated pipelines and the checks their jobs make.", no_args_is_help=True
)
app.add_typer(ci_app, name="ci")

# Output read later (CI job logs, pipes) gets tables as wide as their rows need, not the 80 columns Rich
# assumes without a terminal: a digest or a processor name cut to "sha256…" is no use to an operator.
_LOG_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
out = Console(soft_wrap=True, width=_LOG_WIDTH)
err = Console(stderr=True, soft_wrap=True, width=_LOG_WIDTH)


@dataclass
class Options:
    profile_file: str | None
    debug: bool
    flags: dict[str, Any]

    def load(self) -> "LoadedProfile":
        from imagekit.config import load_profile

        return load_profile(self.profile_file, flags=self.flags)


def _options(ctx: typer.Context) -> Options:
    options = ctx.find_root().obj
    assert isinstance(options, Options)
    return options


def _log(message: str) -> None:
    err.print(f"[dim]>[/dim] {message}", highlight=False)


def _warn_unknown_revision(source: "SourceInfo", what: str) -> None:
    """An image without a git-<sha> tag is easy to miss; say so, and why."""
    if source.unknown_reason:
        line = f"warning: revision unknown, {what}: {source.unknown_reason}"
        err.print(line, highlight=False, markup=False)


@app.callback()
def main_options(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="Site profile file (default: ./imagekit.toml, then XDG config)."),
    ] = None,
    registry: Annotated[str | None, typer.Option("--registry", help="Registry host[:port].")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="docker, podman or buildah.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    ctx.obj = Options(profile, debug, {"registry.url": registry, "engine.name": engine})


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print every effective setting, where it came from; secrets are never shown."""
    loaded = _options(ctx).load()
    table = Table("setting", "value", "from")
    for name, value, source in loaded.show():
        table.add_row(name, value, source)
    out.print(table)
    out.print(f"profile file: {loaded.file or 'none (embedded defaults)'}")


@app.command("doctor")
def doctor_command(ctx: typer.Context) -> None:
    """Check each real part the profile needs; say how to get what is missing."""
    from imagekit import doctor

    profile = _options(ctx).load().profile
    checks = doctor.run_checks(profile)
    table = Table("part", "state", "detail")
    for check in checks:
        state = (
            "[green]ok[/green]"
            if check.ok
            else ("[red]MISSING[/red]" if check.needed else "[yellow]absent[/yellow]")
        )
        table.add_row(check.part, state, check.detail)
    out.print(table)
    failing = [c for c in checks if c.needed and not c.ok]
    for check in checks:
        if not check.ok:
            err.print(f"{check.part}: {check.how_to_get}", highlight=False, markup=False)
    if failing:
        names = ", ".join(c.part for c in failing)
        raise _Exit(1, f"doctor: missing what this profile needs: {names}")


@dev_app.command("up")
def dev_up(
    ctx: typer.Context,
    bases: Annotated[bool, typer.Option(help="Bootstrap the base images too.")] = True,
) -> None:
    """Install and start engine and registry on this machine, bootstrap base images; idempotent."""
    from imagekit import devenv

    profile = _options(ctx).load().profile
    refs = devenv.up(profile, _log, bases=bases)
    for name, ref in sorted(refs.items()):
        out.print(f"{name}: {ref.pinned}", highlight=False)
    out.print("local environment is up")


@dev_app.command("down")
def dev_down(ctx: typer.Context) -> None:
    """Stop what `dev up` started, and nothing else."""
    from imagekit import devenv

    stopped = devenv.down(_options(ctx).load().profile, _log)
    out.print("stopped: " + (", ".join(stopped) if stopped else "nothing (imagekit started nothing running)"))


@base_app.command("list")
def base_list(ctx: typer.Context) -> None:
    """The catalog's base profiles and the digest this site pins each to."""
    from imagekit import catalog

    profile = _options(ctx).load().profile
    records = catalog.recorded_bases(profile.data_dir)
    rows = [
        (name, entry.description, records[name].pinned if name in records else "not pinned")
        for name, entry in sorted(catalog.load_catalog().profiles.items())
    ]
    table = Table("profile", "description")
    # a pinned reference is copied by operators: the description wraps, the reference is never cut
    table.add_column("pinned", no_wrap=True, min_width=max(len(row[2]) for row in rows))
    for row in rows:
        table.add_row(*row)
    out.print(table)


@base_app.command("pin")
def base_pin(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Catalog profile, e.g. rocky-9.")],
    digest: Annotated[str, typer.Argument(help="sha256:<64 hex> of the site's copy of the image.")],
    image: Annotated[
        str | None,
        typer.Option(help="Repository of the site's copy (default: <registry>/<project>/base/<profile>)."),
    ] = None,
) -> None:
    """Record the digest this site builds a catalog base from."""
    from imagekit import catalog

    profile = _options(ctx).load().profile
    profiles = catalog.load_catalog().profiles
    if name not in profiles:
        raise InputError(f"base profile '{name}' is not in the catalog ({', '.join(sorted(profiles))})")
    repository = catalog.site_repository(profile.registry.url, profile.registry.project, name)
    ref = catalog.BaseRef(image=image or repository, digest=digest)
    catalog.record_base(profile.data_dir, name, ref)
    out.print(f"{name}: {ref.pinned}", highlight=False)


@app.command("init")
def init_command(
    directory: Annotated[Path, typer.Argument(help="Directory of the new processor.")] = Path("."),
    name: Annotated[str | None, typer.Option(help="Processor name (default: the directory's name).")] = None,
) -> None:
    """Scaffold a processor directory whose processor.yaml validates as written."""
    from imagekit.manifest import scaffold

    for path in scaffold(directory, name):
        out.print(f"created {path}", highlight=False)


@app.command("validate")
def validate_command(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="processor.yaml files or directories.")],
    release: Annotated[bool, typer.Option(help="Apply the release rules (pinned base digest).")] = False,
) -> None:
    """Validate manifests: every problem at once, as FILE:LINE:COL: field: message."""
    from imagekit.catalog import site_bases
    from imagekit.manifest import validate_paths

    profile = _options(ctx).load().profile
    bases = site_bases(profile.registry.url, profile.registry.project)
    results = validate_paths(paths, data_dir=profile.data_dir, bases=bases, release=release)
    failures = [(path, error) for path, error in results if error is not None]
    for path, error in results:
        if error is None:
            out.print(f"ok {path}", highlight=False)
        else:
            # one manifest: its own summary (FILE:LINE:COL of the first problem) is the last line
            for line in error.lines()[:-1] if len(results) == 1 else error.lines():
                err.print(line, highlight=False, markup=False)
    if failures:
        if len(results) == 1:
            raise InputError(failures[0][1].lines()[-1])
        raise InputError(f"{len(failures)} of {len(results)} manifests invalid")


@app.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of processor.yaml (for editors and CI linters)."""
    from imagekit.manifest import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))


@app.command("render")
def render_command(
    ctx: typer.Context,
    directories: Annotated[list[Path], typer.Argument(help="Processor directories.")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Output directory; with several processors, <name>/ in it each."),
    ] = None,
    target: Annotated[str, typer.Option(help="docker or apptainer.")] = "docker",
    image_ref: Annotated[
        str, typer.Option(help="apptainer: the pushed image@digest to bootstrap from.")
    ] = "",
    release: Annotated[bool, typer.Option(help="Apply the release rules.")] = False,
) -> None:
    """Render the Dockerfile (or Apptainer definition) and its exact build context; several in one go."""
    from imagekit.catalog import site_bases
    from imagekit.manifest.checksums import ChecksumCache
    from imagekit.render import render_processor, render_processors

    if target not in ("docker", "apptainer"):
        raise InputError(f"--target: expected docker or apptainer, got '{target}'")
    profile = _options(ctx).load().profile
    kind: Literal["docker", "apptainer"] = "apptainer" if target == "apptainer" else "docker"
    site, data_dir = profile.site, profile.data_dir
    # the same checks as build: the site's own base copies, COTS checksums with their line and column
    checksums = ChecksumCache(data_dir)
    bases = site_bases(profile.registry.url, profile.registry.project)
    if len(directories) == 1:
        rendered = render_processor(
            directories[0],
            output,
            data_dir=data_dir,
            site=site,
            release=release,
            target=kind,
            image_ref=image_ref,
            checksums=checksums,
            bases=bases,
        )
        for path in rendered.result.files:
            out.print(f"wrote {rendered.result.context_dir / path}", highlight=False)
        _warn_unknown_revision(rendered.source, "a build of it gets no git-<sha> tag")
        return
    warned = set()
    for rendered in render_processors(
        directories,
        output,
        data_dir=data_dir,
        site=site,
        release=release,
        target=kind,
        image_ref=image_ref,
        checksums=checksums,
        bases=bases,
    ):
        result = rendered.result
        out.print(f"rendered {result.context_dir} ({len(result.files)} files)", highlight=False)
        if rendered.source.unknown_reason not in warned:
            warned.add(rendered.source.unknown_reason)
            _warn_unknown_revision(rendered.source, "a build of it gets no git-<sha> tag")


@app.command("build")
def build_command(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Processor directory.")],
    test: Annotated[bool, typer.Option("--test", help="Run the smoke tests after the build.")] = False,
    release: Annotated[bool, typer.Option(help="Apply the release rules.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not stream the engine's output.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Rebuild every layer.")] = False,
) -> None:
    """Render and build on the profile's engine; tags <name>:<version> and <name>:git-<sha>."""
    from imagekit.engines.base import instruction_of
    from imagekit.pipeline import build_processor

    profile = _options(ctx).load().profile

    def stream(line: str) -> None:
        if quiet:
            return
        if instruction_of(line):
            err.print(f"[bold cyan]{escape(line)}[/bold cyan]", highlight=False)
        else:
            err.print(f"[dim]  {escape(line)}[/dim]", highlight=False)

    outcome = build_processor(directory, profile, on_line=stream, release=release, no_cache=no_cache)
    _warn_unknown_revision(outcome.source, "no git-<sha> tag")
    image = outcome.image
    table = Table("size", "layer", title=f"{image.tags[0]} ({image.engine}) {image.id}")
    for layer in image.layers:
        table.add_row(_size(layer.size) if layer.size else "", _step(layer.created_by))
    out.print(table)
    out.print(f"built {', '.join(image.tags)} image {image.id}; log {image.log_file}", highlight=False)
    if test:
        _run_smoke(directory, profile)


@app.command("test")
def test_command(
    ctx: typer.Context, directory: Annotated[Path, typer.Argument(help="Processor directory.")]
) -> None:
    """Run the manifest's smoke tests inside the built image, as its user, with no network."""
    _run_smoke(directory, _options(ctx).load().profile)


@app.command("scan")
def scan_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="Processor directory (scan its built image), or an image.")],
    status: Annotated[
        bool, typer.Option("--status", help="Only say the recorded status of the image's exact content.")
    ] = False,
    reports: Annotated[Path, typer.Option(help="Where reports are kept, as <name>/<version>/.")] = Path(
        "scans"
    ),
) -> None:
    """Scan with Trivy and apply the policy: exit 0 passed (or passed, vulnerabilities not checked),
    3 failed or not scanned."""
    from imagekit.engines import engine_for
    from imagekit.pipeline import image_of, scan_target
    from imagekit.scan import ScanFailed, scan_status
    from imagekit.scan.report import brief

    profile = _options(ctx).load().profile
    if status:
        image = image_of(target)
        state = scan_status(image, profile.data_dir, engine=engine_for(profile))
        out.print(f"{image}: {state}", highlight=False)
        if state not in ("passed", "passed, vulnerabilities not checked"):
            raise _Exit(3, f"{image}: {state}")
        return
    try:
        result = scan_target(target, profile, reports_root=reports)
    except ScanFailed as failed:
        out.print("\n".join(brief(failed.result)), highlight=False, markup=False)
        raise
    out.print("\n".join(brief(result)), highlight=False, markup=False)


@ci_app.command("render")
def ci_render(
    ctx: typer.Context,
    target: Annotated[Path, typer.Argument(help="Processor directory, or a directory of processors.")],
    local: Annotated[
        str | None,
        typer.Option(help="Include the central template from this path in the repository (copied there)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here, '-' for stdout (default: top level).")
    ] = None,
) -> None:
    """Write the `.gitlab-ci.yml` that runs imagekit's central template for these processors."""
    from imagekit.ci import render_pipeline, write_pipeline

    profile = _options(ctx).load().profile
    command = "imagekit ci render " + " ".join(
        [str(target), *([f"--local {local}"] if local is not None else [])]
    )
    rendered = render_pipeline(target, profile, local=local, command=command)
    if output is not None and str(output) == "-":
        out.print(rendered.text, end="", highlight=False, markup=False)
        return
    for path in write_pipeline(rendered, output):
        out.print(f"wrote {path}", highlight=False)


@ci_app.command("template")
def ci_template(
    plain: Annotated[
        bool, typer.Option("--plain", help="The plain include form, for GitLab without spec:inputs.")
    ] = False,
) -> None:
    """Print the central template a site publishes: the CI/CD component, or its plain include form."""
    from imagekit.ci import component_text, plain_text

    print(plain_text() if plain else component_text(), end="")


@ci_app.command("check-tag")
def ci_check_tag(
    directory: Annotated[Path, typer.Argument(help="Processor directory.")],
    tag: Annotated[str, typer.Argument(help="The release tag, e.g. $CI_COMMIT_TAG.")],
) -> None:
    """Print the version a release tag names; fail unless it is processor.version."""
    from imagekit.ci import release_version
    from imagekit.manifest import load_manifest

    manifest = load_manifest(directory)
    info = manifest.processor.processor
    print(release_version(tag, name=info.name, version=info.version, manifest=str(manifest.path)))


@app.command("push")
def push_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="Processor directory (push its built image), or an image.")],
    skip_scan: Annotated[bool, typer.Option("--skip-scan", help="Push without a passed scan.")] = False,
    reason: Annotated[
        str | None, typer.Option(help="Why the scan gate is skipped; recorded in the registry.")
    ] = None,
    reports: Annotated[Path, typer.Option(help="Where scan reports are kept, as <name>/<version>/.")] = Path(
        "scans"
    ),
    from_tag: Annotated[
        str | None,
        typer.Option(
            "--from-tag",
            help="Tag the registry's image of this tag (e.g. git-<sha>) as the version: no build, no upload.",
        ),
    ] = None,
    git_only: Annotated[
        bool, typer.Option("--git-only", help="Push as git-<sha> only; a release tags the version later.")
    ] = False,
) -> None:
    """Push to <registry>/<project>/<name>:<version> and :git-<sha>; a version is never overwritten."""
    from imagekit.pipeline import image_of
    from imagekit.registry import push, tag_existing

    if skip_scan != (reason is not None):
        raise InputError("--skip-scan and --reason go together: say why the scan gate is skipped")
    profile = _options(ctx).load().profile
    if from_tag is not None:
        if skip_scan or git_only:
            raise InputError("--from-tag tags what the registry holds: no --skip-scan, no --git-only")
        name, _, version = image_of(target).rpartition(":")
        if not name:
            raise InputError(f"{target}: give a processor directory or <name>:<version> with --from-tag")
        tagged = tag_existing(profile, name, version, from_tag)
        done = "was already" if tagged.already_there else "is now"
        out.print(
            f"{tagged.repository}:{version} {done} {from_tag} ({tagged.digest}): nothing built or uploaded; "
            f"scan '{tagged.scan_status}' (recorded in the registry)",
            highlight=False,
        )
        return
    result = push(
        image_of(target), profile, skip_reason=reason, reports_root=reports, log=_log, git_only=git_only
    )
    tags = ", ".join(result.tags)
    if result.already_there:
        out.print(f"{result.repository}@{result.digest} is already there as {tags}: nothing pushed")
        return
    out.print(
        f"pushed {result.repository}:{tags} {result.digest}: {result.uploaded_blobs} blobs "
        f"({_size(result.uploaded_bytes)}) uploaded, {result.skipped_blobs} already there, "
        f"{result.seconds:.1f} s; scan '{result.scan_status}' attached via the {result.attached_via}",
        highlight=False,
    )


@app.command("promote")
def promote_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Processor name.")],
    ref: Annotated[str, typer.Argument(help="A version, git-<sha> or sha256:<digest>.")],
    channel: Annotated[str, typer.Option("--channel", "-c", help="One of release.channels.")],
) -> None:
    """Point a channel at a pushed image, in the registry and (if published there) the CVMFS tree."""
    from imagekit.release import promote

    _print_move(promote(_options(ctx).load().profile, name, ref, channel, log=_log))


@app.command("rollback")
def rollback_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Processor name.")],
    channel: Annotated[str, typer.Option("--channel", "-c", help="One of release.channels.")],
    to: Annotated[
        str | None, typer.Option("--to", help="Version to go back to (default: the channel's previous one).")
    ] = None,
) -> None:
    """Move a channel back (registry and CVMFS tree), by default to the version it held before."""
    from imagekit.release import rollback

    _print_move(rollback(_options(ctx).load().profile, name, channel, to=to, log=_log))


def _print_move(moved: Any) -> None:
    result = moved.registry
    # a git-<sha> not (yet) tagged as the version its label says: both names, never only the label
    details = [f"labelled {result.label}"] if result.label and result.label != result.version else []
    details += [result.digest] if result.digest != result.version else []
    target = f"{result.version} ({'; '.join(details)})" if details else result.version
    if result.move is None:
        out.print(f"registry: {result.channel} already points to {target}: nothing moved", highlight=False)
    else:
        out.print(
            f"registry: {result.channel}: {result.move.previous_version or '(none)'} -> {target} "
            f"in {result.seconds:.2f} s; scan '{result.scan.describe()}'; "
            f"history entry {result.move.id}",
            highlight=False,
        )
    out.print(f"cvmfs: {result.channel}: {moved.cvmfs}", highlight=False)


@app.command("releases")
def releases_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Processor name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Versions, digests, push time, revision, scan status and channels (from the registry), and each
    version's CVMFS publication receipt (revision and time, from the tree)."""
    from imagekit.registry import releases
    from imagekit.release import receipts

    profile = _options(ctx).load().profile
    found = releases(profile, name)
    published = receipts(profile, name, [row.version for row in found.versions])
    if as_json:
        data = found.model_dump(mode="json")
        data["cvmfs"] = {v: p.model_dump(mode="json") if p else None for v, p in published.items()}
        print(json.dumps(data, indent=2))
        return
    table = Table(
        "version", "digest", "pushed", "revision", "scan", "channels", "cvmfs", title=found.repository
    )
    for row in found.versions:
        scan = row.scan_status + (f" (gate skipped: {row.scan_skip_reason})" if row.scan_skip_reason else "")
        receipt = published.get(row.version)
        where = f"revision {receipt.revision} at {receipt.published_at}" if receipt else "not published"
        table.add_row(
            row.version,
            row.digest[:19],
            row.pushed_at[:19],
            row.revision[:12],
            scan,
            ", ".join(row.channels),
            where,
        )
    out.print(table)
    channels = Table("channel", "version", "digest", "since", "by")
    for moved in found.channels:
        channels.add_row(moved.channel, moved.version, moved.digest[:19], moved.since[:19], moved.by)
    out.print(channels)


@app.command("release")
def release_command(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Processor directory.")],
    reports: Annotated[Path, typer.Option(help="Where scan reports are kept, as <name>/<version>/.")] = Path(
        "scans"
    ),
) -> None:
    """Validate, render, build, test, scan, push, publish to CVMFS and promote to the first channel."""
    from rich.progress import Progress, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Spinner(SpinnerColumn):
        """Spins for the running step only."""

        def render(self, task: Task) -> Any:
            return super().render(task) if task.started and not task.finished else Text(" ")

    from imagekit.release import STEPS, release

    profile = _options(ctx).load().profile
    marks = {"done": "[green]done[/green]", "skipped": "[dim]skipped[/dim]", "failed": "[red]FAILED[/red]"}
    with Progress(
        Spinner(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=False
    ) as progress:
        tasks = {step: progress.add_task(f"{step}: waiting", start=False) for step in STEPS}

        def on_step(step: str, state: str) -> None:
            if state == "running":
                progress.start_task(tasks[step])
                progress.update(tasks[step], description=f"{step}: running")
                return
            progress.update(tasks[step], description=f"{step}: {marks[state]}", total=1, completed=1)
            progress.stop_task(tasks[step])

        done = release(directory, profile, reports_root=reports, on_step=on_step)
    table = Table("step", "result", "time", "detail", title=f"release {done.name} {done.version}")
    for step in done.steps:
        table.add_row(step.name, step.result, f"{step.seconds:.1f} s", escape(step.detail))
    out.print(table)
    out.print(f"digest: {done.digest}", highlight=False)
    tree = f"{done.cvmfs_path} (revision {done.cvmfs_revision})" if done.cvmfs_path else "not published"
    out.print(f"cvmfs: {tree}", highlight=False)
    if done.unchanged:
        out.print(
            f"{done.name} {done.version} is unchanged: already pushed from this render"
            + (" and published" if done.cvmfs_path else "")
            + ", nothing done"
        )
    else:
        out.print(f"released {done.name} {done.version} to {done.channel}", highlight=False)


@app.command("inspect")
def inspect_command(
    ctx: typer.Context,
    image: Annotated[
        str, typer.Argument(help="NAME[:TAG] or <registry>/<project>/NAME[:TAG] (default: newest).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable, for workflow engines.")] = False,
) -> None:
    """An image from the registry and the tree: labels, executables, scan, SBOM, channels, CVMFS path."""
    from imagekit.release import inspect

    found = inspect(_options(ctx).load().profile, image)
    if as_json:
        print(found.model_dump_json(indent=2))
        return
    table = Table("field", "value", title=found.image, show_header=False)
    sbom = found.sbom
    for field, value in (
        ("version", found.version),
        ("digest", found.digest),
        ("revision", found.revision),
        ("source", found.source),
        ("created", found.created),
        ("manifest sha256", found.manifest_sha256),
        ("base", found.base),
        ("scan", found.scan),
        ("sbom", f"{sbom.format}: {sbom.components} components {sbom.by_type}" if sbom else "none attached"),
        ("channels", ", ".join(found.channels) or "none"),
        (
            "cvmfs",
            f"{found.cvmfs_path} (revision {found.cvmfs_revision})" if found.cvmfs_path else "not published",
        ),
        ("cvmfs channels", ", ".join(found.cvmfs_channels) or "none"),
    ):
        table.add_row(field, escape(str(value)))
    out.print(table)
    executables = Table("executable", "command", "inputs", "outputs", "resources")
    for e in found.executables:
        executables.add_row(
            *(
                escape(str(x))
                for x in (
                    e.get("name"),
                    " ".join(e.get("command") or []),
                    e.get("inputs"),
                    e.get("outputs"),
                    e.get("resources"),
                )
            )
        )
    out.print(executables)


@app.command("status")
def status_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What runs where, since when, and is it safe: every processor's channels, registry next to tree."""
    from imagekit.release import status

    profile = _options(ctx).load().profile
    rows = status(profile)
    if as_json:
        print(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
    else:
        table = Table(
            "processor", "channel", "version", "digest", "since", "scan", "cvmfs", "problems",
            title=f"{profile.registry.url}/{profile.registry.project}",
        )  # fmt: skip
        for row in rows:
            tree = f"{row.cvmfs_version} (revision {row.cvmfs_revision})" if row.cvmfs_version else "-"
            flag = (
                "[red]" + escape("; ".join(row.problems)) + "[/red]" if row.problems else "[green]ok[/green]"
            )
            db = row.vulnerability_db
            scan = f"{row.scan}; vulnerability DB {db}" if db else row.scan
            table.add_row(
                row.processor, row.channel, row.version, row.digest[:19], row.since[:19], scan, tree, flag
            )
        out.print(table)
    flagged = [row for row in rows if row.problems]
    if flagged:
        raise _Exit(1, f"status: {len(flagged)} channels inconsistent or unsafe (see problems)")


@app.command("publish")
def publish_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="Processor directory (its version), or an image name:tag.")],
    to_cvmfs: Annotated[
        bool, typer.Option("--cvmfs", help="Publish the unpacked image to the CVMFS tree.")
    ] = False,
    skip_scan: Annotated[bool, typer.Option("--skip-scan", help="Publish without a passed scan.")] = False,
    reason: Annotated[
        str | None, typer.Option(help="Why the scan gate is skipped; recorded with the publication.")
    ] = None,
) -> None:
    """Publish a pushed image, exactly as the registry serves it, to the profile's CVMFS tree."""
    from imagekit import cvmfs
    from imagekit.pipeline import image_of

    if not to_cvmfs:
        raise InputError("publish needs a destination: --cvmfs (a registry push is `imagekit push`)")
    if skip_scan != (reason is not None):
        raise InputError("--skip-scan and --reason go together: say why the scan gate is skipped")
    profile = _options(ctx).load().profile
    result = cvmfs.publish(profile, image_of(target), skip_reason=reason, log=_log)
    for line in result.skipped:
        err.print(f"skipped {line}", highlight=False, markup=False)
    for line in result.warnings:
        err.print(f"warning: {line}", highlight=False, markup=False)
    done = result.publication
    where = f"{profile.cvmfs.backend} {profile.cvmfs.repository}"
    if result.noop:
        out.print(
            f"{done.ref} {done.manifest_digest} is already published ({where} revision {done.revision}, "
            f"{done.published_at}): nothing to do",
            highlight=False,
        )
        return
    source = f"extending {done.incremental_from[:19]}, " if done.incremental_from else ""
    out.print(
        f"published {done.ref} {done.manifest_digest} to {where}: revision {done.revision} at "
        f"{done.published_at}; {source}{done.layers_applied} layers applied, {done.entries_written} entries "
        f"({_size(done.bytes_written)}) written, {result.seconds:.1f} s",
        highlight=False,
    )


cvmfs_app = typer.Typer(
    help="The CVMFS tree: verify what is published, collect garbage.", no_args_is_help=True
)
app.add_typer(cvmfs_app, name="cvmfs")


@cvmfs_app.command("verify")
def cvmfs_verify(
    ctx: typer.Context,
    image: Annotated[str | None, typer.Argument(help="One image name:tag (default: every one).")] = None,
) -> None:
    """Check published flats, entry by entry, against what their layers define (exit 1 on a mismatch)."""
    from imagekit import cvmfs
    from imagekit.cvmfs.publish import repository_of

    profile = _options(ctx).load().profile
    repository, tag = repository_of(profile, image) if image else (None, None)
    _report_verify(cvmfs.verify(profile, repository, tag))


def _report_verify(result: Any) -> None:
    for flat in result.checked:
        problems = result.problems.get(flat)
        mark = "[red]BROKEN[/red]" if problems else "[green]ok[/green]"
        out.print(f"{mark} {escape(flat)}", highlight=False)
        for line in problems or []:
            out.print(f"    {escape(line)}", highlight=False)
    if result.problems:
        raise _Exit(1, f"cvmfs verify: {len(result.problems)} of {len(result.checked)} trees do not match")


@cvmfs_app.command("gc")
def cvmfs_gc(
    ctx: typer.Context,
    keep: Annotated[int, typer.Option("--keep", help="Versions kept per processor, beyond channels.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed.")] = False,
) -> None:
    """Remove versions beyond the N newest per processor (never one a channel points to), then verify."""
    from imagekit import cvmfs

    plan, verified = cvmfs.gc(_options(ctx).load().profile, keep, dry_run=dry_run, log=_log)
    verb = "would remove" if dry_run else "removed"
    for rel in plan.tags + plan.flats + plan.chains + plan.layers:
        out.print(f"{verb} {rel}", highlight=False)
    counts = (
        f"{len(plan.tags)} tags, {len(plan.flats)} flats, {len(plan.chains)} layer chains, "
        f"{len(plan.layers)} .layers"
    )
    out.print(f"{verb} {counts}", highlight=False)
    if verified is not None:
        _report_verify(verified)


harbor_app = typer.Typer(help="Harbor-only settings: project, immutability, retention, robots, scans.")
app.add_typer(harbor_app, name="harbor")


def _harbor(ctx: typer.Context) -> tuple[Any, "Profile"]:
    from imagekit.registry.harbor import Harbor

    profile = _options(ctx).load().profile
    if profile.registry.kind != "harbor":
        raise InputError(f"registry.kind is '{profile.registry.kind}': these commands need kind = \"harbor\"")
    return Harbor(profile), profile


@harbor_app.command("setup")
def harbor_setup(ctx: typer.Context) -> None:
    """Ensure the project exists and version tags (never channels) are immutable."""
    harbor, profile = _harbor(ctx)
    project = profile.registry.project
    out.print(f"project {project}: {'created' if harbor.ensure_project(project) else 'exists'}")
    added = harbor.ensure_immutability(project)
    out.print(f"immutability rule for version and git- tags: {'added' if added else 'already there'}")


@harbor_app.command("retention")
def harbor_retention(
    ctx: typer.Context,
    keep: Annotated[int, typer.Option(help="Versions to keep per repository (channels: always).")],
    apply: Annotated[bool, typer.Option("--apply", help="Then run it for real, after the dry run.")] = False,
) -> None:
    """Set the retention policy and show its dry run; --apply runs it after the dry run is shown."""
    harbor, profile = _harbor(ctx)
    policy_id = harbor.set_retention(profile.registry.project, keep)
    plan = harbor.run_retention(policy_id, dry_run=True)
    table = Table("repository", "artifacts", "retained", "status", title=f"dry run {plan.execution}")
    for task in plan.tasks:
        table.add_row(*(str(task.get(key, "")) for key in ("repository", "total", "retained", "status")))
    out.print(table)
    if apply:
        out.print(f"retention run started: {harbor.run_retention(policy_id, dry_run=False).execution}")


@harbor_app.command("robot")
def harbor_robot(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Robot name, e.g. gitlab-ci.")],
    days: Annotated[int, typer.Option(help="Days until it expires (-1: never).")] = 365,
) -> None:
    """Create a push/pull robot for CI; its secret is printed once here and stored nowhere."""
    harbor, profile = _harbor(ctx)
    robot, secret = harbor.create_robot(profile.registry.project, name, days=days)
    out.print(f"robot {robot}; secret (shown once, store it in CI's masked variables):", highlight=False)
    print(secret)


@harbor_app.command("scan")
def harbor_scan(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Processor name.")],
    ref: Annotated[str, typer.Argument(help="Version or digest.")],
    report: Annotated[bool, typer.Option("--report", help="Read the report of an earlier scan.")] = False,
) -> None:
    """Trigger Harbor's scan of a pushed image, or read its vulnerability counts."""
    harbor, profile = _harbor(ctx)
    if not report:
        harbor.scan(profile.registry.project, name, ref)
        out.print(f"Harbor scan of {name}:{ref} started; read it with --report")
        return
    counts = harbor.vulnerabilities(profile.registry.project, name, ref)
    out.print(", ".join(f"{severity}: {count}" for severity, count in counts.items()))


def _run_smoke(directory: Path, profile: "Profile") -> None:
    from imagekit.pipeline import require_all_passed, smoke_test_processor, version_image

    manifest, outcomes = smoke_test_processor(directory, profile)
    for outcome in outcomes:
        mark = "[green]PASS[/green]" if outcome.passed else "[red]FAIL[/red]"
        out.print(f"{mark} {escape(outcome.test.name)}: {escape(outcome.reason)}", highlight=False)
        if not outcome.passed:
            for line in (outcome.stdout + outcome.stderr).strip().splitlines()[-10:]:
                out.print(f"    | {escape(line)}", highlight=False)
    require_all_passed(version_image(manifest), outcomes)


_CONTENT_HASH = re.compile(r"\b(file|dir):([0-9a-f]{12})[0-9a-f]{52}\b")
_SHELL_PREFIXES = (
    "/bin/sh -c #(nop) ",
    "/bin/bash -o pipefail -c #(nop) ",
    "/bin/sh -c ",
    "/bin/bash -o pipefail -c ",
)


def _step(created_by: str) -> str:
    """A layer's instruction as written in the Dockerfile, without the engine's shell prefix."""
    for prefix in _SHELL_PREFIXES:
        if created_by.startswith(prefix):
            created_by = created_by[len(prefix) :]
            break
    created_by = _CONTENT_HASH.sub(r"\1:\2", " ".join(created_by.split()))
    return escape(created_by[:90] + ("…" if len(created_by) > 90 else "")) if created_by else "(base image)"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(size)


class _Exit(ImagekitError):
    """A command's own non-zero ending, with its last line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = code


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turn every error into one clear stderr line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, prog_name="imagekit", standalone_mode=False)
    except ImagekitError as error:
        if debug:
            err.print_exception()
        for line in error.lines():
            err.print(line, highlight=False, markup=False, soft_wrap=True)
        return error.exit_code
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        err.print("aborted")
        return 1
    except typer.TyperException as usage:
        show = getattr(usage, "show", None)
        if callable(show):
            show()
        else:
            err.print(usage.format_message(), markup=False)
        return usage.exit_code
    except Exception as unexpected:  # the last guard: a bug must still end in one clear line
        if debug:
            raise
        err.print(
            f"internal error: {type(unexpected).__name__}: {unexpected} (--debug shows the traceback)",
            markup=False,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

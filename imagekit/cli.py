"""The `imagekit` command: parses arguments, loads the profile, calls one step, maps errors to exit codes.

Exit codes: 0 done, 1 tool or infrastructure failure, 2 bad input or usage, 3 a policy said no.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from imagekit import catalog, doctor
from imagekit.config import LoadedProfile, Profile, load_profile
from imagekit.errors import ImagekitError, InputError

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

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@dataclass
class Options:
    profile_file: str | None
    debug: bool
    flags: dict[str, Any]

    def load(self) -> LoadedProfile:
        return load_profile(self.profile_file, flags=self.flags)


def _options(ctx: typer.Context) -> Options:
    options = ctx.find_root().obj
    assert isinstance(options, Options)
    return options


def _log(message: str) -> None:
    err.print(f"[dim]>[/dim] {message}", highlight=False)


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
    profile = _options(ctx).load().profile
    records = catalog.recorded_bases(profile.data_dir)
    table = Table("profile", "description", "pinned")
    for name, entry in sorted(catalog.load_catalog().profiles.items()):
        ref = records.get(name)
        table.add_row(name, entry.description, ref.pinned if ref else "not pinned")
    out.print(table)


@base_app.command("pin")
def base_pin(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Catalog profile, e.g. rocky-9.")],
    digest: Annotated[str, typer.Argument(help="sha256:<64 hex> of the site's copy of the image.")],
    image: Annotated[
        str | None, typer.Option(help="Repository of the site's copy (default: the catalog's).")
    ] = None,
) -> None:
    """Record the digest this site builds a catalog base from."""
    profile = _options(ctx).load().profile
    profiles = catalog.load_catalog().profiles
    if name not in profiles:
        raise InputError(f"base profile '{name}' is not in the catalog ({', '.join(sorted(profiles))})")
    ref = catalog.BaseRef(image=image or profiles[name].image, digest=digest)
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
    paths: Annotated[list[Path], typer.Argument(help="processor.yaml files or directories.")],
    release: Annotated[bool, typer.Option(help="Apply the release rules (pinned base digest).")] = False,
) -> None:
    """Validate manifests: every problem at once, as FILE:LINE:COL: field: message."""
    from imagekit.manifest import validate_paths

    results = validate_paths(paths, release=release)
    failures = [(path, error) for path, error in results if error is not None]
    for path, error in results:
        if error is None:
            out.print(f"ok {path}", highlight=False)
        else:
            for line in error.lines():
                err.print(line, highlight=False, markup=False)
    if failures:
        raise InputError(f"{len(failures)} of {len(results)} manifests invalid")


@app.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of processor.yaml (for editors and CI linters)."""
    from imagekit.manifest import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))


@app.command("render")
def render_command(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Processor directory.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output directory.")] = None,
    target: Annotated[str, typer.Option(help="docker or apptainer.")] = "docker",
    image_ref: Annotated[
        str, typer.Option(help="apptainer: the pushed image@digest to bootstrap from.")
    ] = "",
    release: Annotated[bool, typer.Option(help="Apply the release rules.")] = False,
) -> None:
    """Render the Dockerfile (or Apptainer definition) and its exact build context."""
    from imagekit.pipeline import render_processor

    if target not in ("docker", "apptainer"):
        raise InputError(f"--target: expected docker or apptainer, got '{target}'")
    profile = _options(ctx).load().profile
    _, _, rendered = render_processor(
        directory,
        profile,
        output,
        release=release,
        target="apptainer" if target == "apptainer" else "docker",
        image_ref=image_ref,
    )
    for path in rendered.files:
        out.print(f"wrote {rendered.context_dir / path}", highlight=False)


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
    status: Annotated[bool, typer.Option("--status", help="Only say passed / failed / not scanned.")] = False,
    reports: Annotated[Path, typer.Option(help="Where reports are kept, as <name>/<version>/.")] = Path(
        "scans"
    ),
) -> None:
    """Scan with Trivy and apply the policy: exit 0 passed, 3 failed or not scanned."""
    from imagekit.pipeline import image_of, scan_target
    from imagekit.scan import scan_status

    profile = _options(ctx).load().profile
    if status:
        image = image_of(target)
        state = scan_status(image, profile.data_dir, docker=profile.engine.docker)
        out.print(f"{image}: {state}", highlight=False)
        if state != "passed":
            raise _Exit(3, f"{image}: {state}")
        return
    result = scan_target(target, profile, reports_root=reports)
    out.print(f"scan passed: {result.decision.rule}; reports in {result.reports}", highlight=False)


def _run_smoke(directory: Path, profile: Profile) -> None:
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

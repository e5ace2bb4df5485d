"""The one exception hierarchy of imagekit.

Every error a user can meet carries its message and the exit code the CLI returns for it:
0 done, 1 a tool or infrastructure failure, 2 bad input or usage, 3 a policy said no.
"""

from __future__ import annotations

from dataclasses import dataclass


class ImagekitError(Exception):
    """Base of every error meant for a user; never shown with a traceback unless --debug."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        """The lines printed to stderr; the last one says what and where."""
        return [self.message] if not self.hint else [self.hint, self.message]


class ToolError(ImagekitError):
    """A real part (engine, registry, cvmfs_server, trivy) failed or is unreachable."""

    exit_code = 1


class MissingPartError(ToolError):
    """A real part the profile needs is not installed or not running."""

    def __init__(self, part: str, how_to_get: str) -> None:
        super().__init__(f"{part} is missing: {how_to_get}")
        self.part = part
        self.how_to_get = how_to_get


class InputError(ImagekitError):
    """Bad input or usage: manifest, profile, arguments."""

    exit_code = 2


class ProfileError(InputError):
    """The site profile is wrong (unknown key, bad value, unknown engine or backend)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in an input file, located precisely."""

    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ManifestError(InputError):
    """A processor.yaml is invalid; carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count, first = len(problems), problems[0]
        # the last line (what CI shows, what an editor jumps to) names where the first problem is
        summary = f"{first.file}:{first.line}:{first.column}: {count} problem{'s' if count != 1 else ''}"
        field = first.field if first.field.isprintable() else repr(first.field)  # a key may hold '\r'
        summary += f" in this manifest (first: {field})" if field else " in this manifest"
        super().__init__("\n".join(str(p) for p in problems) + "\n" + summary)

    def lines(self) -> list[str]:
        return self.message.splitlines()


class TemplateError(InputError):
    """A template failed to render for a manifest that validated."""

    exit_code = 1


class BuildError(ToolError):
    """The engine failed to build; names the failing instruction."""


class SmokeTestError(ImagekitError):
    """One or more smoke tests failed inside the built image."""

    exit_code = 1


class PolicyError(ImagekitError):
    """A policy said no: scan gate, immutable version."""

    exit_code = 3

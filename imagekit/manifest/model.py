"""The processor.yaml v1 model: the scientist's whole interface to imagekit.

Field names are the contract: fields may be added, never renamed. Attribute names equal the YAML
keys, except `from` (a Python keyword), which is `from_` with the alias `from`.

The model holds what one field can say about itself (types, patterns, bounds), so the JSON Schema
says it too; rules across fields or about the processor directory live in `checks.py`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
VERSION_PATTERN = r"^[0-9]+(\.[0-9]+){1,3}((a|b|rc)[0-9]+)?(\.post[0-9]+)?$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
DIGEST_PATTERN = r"^(sha256:[0-9a-f]{64})?$"
IMAGE_PATTERN = (
    r"^(([a-zA-Z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?)?$"
)
ENV_NAME_PATTERN = r"^[A-Z][A-Z0-9_]*$"
IMAGE_PATH_PATTERN = r"^/\S*$"
USER_PATTERN = r"^([0-9]+|[a-z_][a-z0-9_-]*)(:([0-9]+|[a-z_][a-z0-9_-]*))?$"
PACKAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.+_:~=-]*$"
LICENSE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.+-]*$"
EXECUTABLE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
URL_PATTERN = r"^(https?://\S+)?$"

EXPECTED: dict[str, str] = {
    NAME_PATTERN: "a lowercase name such as s3-olci-l1: letters a-z, digits, '.', '_' or '-', "
    "starting with a letter or digit, at most 63 characters",
    VERSION_PATTERN: "a release version such as 1.4.0, 1.4.0rc1 or 2024.03 ('latest' is not a version)",
    SHA256_PATTERN: "64 lowercase hex digits, as printed by `sha256sum FILE`",
    DIGEST_PATTERN: "sha256:<64 hex digits>",
    IMAGE_PATTERN: "an image reference such as registry.example.org/eo/base/rocky-9:9.5 "
    "(put a digest in base.digest, not in the image)",
    ENV_NAME_PATTERN: "an UPPER_SNAKE_CASE variable name such as OMP_NUM_THREADS",
    IMAGE_PATH_PATTERN: "an absolute path inside the image, starting with / and without spaces",
    USER_PATTERN: "uid[:gid], numeric such as 1000:1000 or a user name such as app",
    PACKAGE_PATTERN: "a package name such as libgomp1, optionally pinned as libgomp1=12.2.0-14",
    LICENSE_PATTERN: "an SPDX license id such as Apache-2.0, or LicenseRef-<name>",
    EXECUTABLE_PATTERN: "a name of letters, digits, '.', '_' or '-', such as olci-l1",
    URL_PATTERN: "an http(s) URL such as https://git.example.org/eo/s3-olci-l1",
}
"""What each pattern means, in the words an error message uses instead of the regex."""

ProcessorName = Annotated[str, Field(pattern=NAME_PATTERN)]
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]
ImagePath = Annotated[str, Field(pattern=IMAGE_PATH_PATTERN)]
Package = Annotated[str, Field(pattern=PACKAGE_PATTERN)]
License = Annotated[str, Field(pattern=LICENSE_PATTERN)]
Text = Annotated[str, Field(min_length=1)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ProcessorInfo(_Strict):
    """Who the processor is: its name and release version make the image's repository and tag."""

    name: ProcessorName = Field(description="Lowercase name; becomes the image repository name.")
    version: str = Field(
        pattern=VERSION_PATTERN,
        description="Release version such as 1.4.0, 1.4.0rc1 or 2024.03 (quote it); the image tag.",
    )
    description: str = Field("", description="One line saying what the processor does.")
    maintainers: list[str] = Field([], description='People to contact, as "Name <email>".')
    licenses: list[License] = Field([], description="SPDX license ids of the processor's own code.")
    source_url: str = Field(
        "",
        pattern=URL_PATTERN,
        description="Where the source lives; defaults to the CI project URL (CI_PROJECT_URL) in CI.",
    )


class Base(_Strict):
    """The base image: a catalog profile, or a site image pinned by digest."""

    profile: str = Field("", description="A base profile of the catalog, such as debian-12-python.")
    image: str = Field(
        "",
        pattern=IMAGE_PATTERN,
        description="The site's copy of a catalog base, <registry>/<project>/base/<profile>, instead of "
        "a profile; without digest.",
    )
    digest: str = Field(
        "", pattern=DIGEST_PATTERN, description="sha256:<64 hex> of `image`; required for a release."
    )


class SystemPackages(_Strict):
    """Distribution packages, installed with the base profile's package manager."""

    build: list[Package] = Field([], description="Only in the builder stage (compilers, headers).")
    runtime: list[Package] = Field([], description="In the final image.")


class CotsItem(_Strict):
    """A third-party binary distribution, unpacked in a layer of its own."""

    name: ProcessorName = Field(description="Lowercase name of the tool.")
    version: Text = Field(description="The tool's version, as its vendor writes it (quote it).")
    source: Text = Field(
        description="Archive path inside the processor directory, or an https:// URL of a mirror."
    )
    sha256: str = Field(pattern=SHA256_PATTERN, description="sha256sum of the archive.")
    extract_to: ImagePath = Field(description="Absolute directory in the image to unpack into.")
    strip_components: int = Field(0, ge=0, description="Leading path components to drop, like tar's.")
    env: dict[EnvName, str] = Field({}, description="Environment variables the tool needs.")
    license: str = Field("", description="The tool's license, such as proprietary.")


class PythonDependencies(_Strict):
    """Python packages, installed from a fully pinned requirements file."""

    requirements: Text = Field(description="Requirements file inside the processor directory.")
    require_hashes: bool = Field(True, description="Refuse requirements without --hash pins.")


class Dependencies(_Strict):
    """Language-level dependencies, installed before the app."""

    python: PythonDependencies | None = Field(None, description="Python requirements.")


class CopySpec(_Strict):
    """A file or directory of the processor directory copied into the image."""

    from_: Text = Field(alias="from", description="Path inside the processor directory.")
    to: ImagePath = Field(description="Absolute destination in the image.")


class BuildStep(_Strict):
    """An optional compiled part, built in a builder stage; only `artifacts` reach the image."""

    workdir: ImagePath = Field("/src", description="Working directory of the commands.")
    copy_: list[CopySpec] = Field([], alias="copy", description="Sources copied into the builder.")
    commands: list[Text] = Field([], description="Shell commands run in order.")
    artifacts: list[ImagePath] = Field([], description="Absolute paths copied to the final image.")


class App(_Strict):
    """The processor's own, most often changed files; last, so rebuilds stay cheap."""

    copy_: list[CopySpec] = Field([], alias="copy", description="Files copied into the image.")
    install: str = Field("", description="Shell command run after copying, such as a pip install.")


class Runtime(_Strict):
    """How the image runs."""

    workdir: ImagePath = Field("/opt/processor", description="Working directory.")
    user: str = Field(
        "1000:1000", pattern=USER_PATTERN, description="uid[:gid] or user name; never root by default."
    )
    allow_root: bool = Field(False, description="Allow running as root; needs root_reason.")
    root_reason: str = Field("", description="Why the processor must run as root.")
    env: dict[EnvName, str] = Field({}, description="Environment variables.")
    entrypoint: list[Text] = Field([], description="Command run by default.")


class Resources(_Strict):
    """What one run needs, for the workflow engine's scheduler."""

    cores: Positive = Field(1, description="CPU cores.")
    ram_gb: Positive = Field(1, description="Memory in GB.")
    walltime_h: Positive = Field(1, description="Wall-clock hours.")
    gpus: int = Field(0, ge=0, description="GPUs.")


class Executable(_Strict):
    """A command a workflow engine may call."""

    name: str = Field(pattern=EXECUTABLE_PATTERN, description="Unique name of the executable.")
    command: list[Text] = Field(min_length=1, description="Command and fixed arguments.")
    inputs: list[str] = Field([], description="Names of the inputs it takes.")
    outputs: list[str] = Field([], description="Names of the outputs it makes.")
    resources: Resources = Field(Resources(), description="Resources one run needs.")


class SmokeTest(_Strict):
    """A command run inside the built image; the build fails if it does."""

    name: Text = Field(description="Unique name of the test.")
    run: list[Text] = Field(min_length=1, description="Command and arguments, run without a shell.")
    expect_stdout: str | None = Field(None, description="Text the standard output must contain.")
    expect_exit: int = Field(0, ge=0, le=255, description="Expected exit code.")
    timeout_s: int = Field(120, gt=0, description="Seconds before the test counts as failed.")


class Publish(_Strict):
    """Where released images go besides the registry."""

    cvmfs: bool = Field(False, description="Also publish the unpacked image to CVMFS.")


class Processor(_Strict):
    """processor.yaml, schema version 1: everything imagekit needs to build a processor image."""

    schema_version: Literal[1] = Field(description="Version of this schema; 1.")
    processor: ProcessorInfo = Field(description="Name, version and provenance.")
    base: Base = Field(description="The base image: `profile`, or `image` (+ `digest`).")
    system_packages: SystemPackages = Field(SystemPackages(), description="Distribution packages.")
    cots: list[CotsItem] = Field([], description="Third-party binaries, each in a layer of its own.")
    dependencies: Dependencies = Field(Dependencies(), description="Language-level dependencies.")
    build: BuildStep | None = Field(None, description="Optional compiled part, built in a builder stage.")
    app: App | None = Field(None, description="The processor's own files, copied last.")
    runtime: Runtime = Field(Runtime(), description="How the image runs.")
    executables: list[Executable] = Field([], description="Commands a workflow engine may call.")
    tests: list[SmokeTest] = Field(min_length=1, description="Smoke tests run inside the built image.")
    publish: Publish = Field(Publish(), description="Where released images go.")
    labels: dict[str, str] = Field(
        {}, description="Extra image labels; org.opencontainers.image.* are generated."
    )


def json_schema() -> dict[str, Any]:
    """The JSON Schema of processor.yaml v1, for editors and `imagekit schema`."""
    schema = Processor.model_json_schema(by_alias=True)
    _close_pattern_maps(schema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def json_schema_text() -> str:
    """The schema as shipped in processor.schema.json, byte for byte what `imagekit schema` prints."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def _close_pattern_maps(node: Any) -> None:
    """Maps with a key pattern (env) accept no other keys, as the model does."""
    if isinstance(node, dict):
        if "patternProperties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _close_pattern_maps(value)
    elif isinstance(node, list):
        for value in node:
            _close_pattern_maps(value)

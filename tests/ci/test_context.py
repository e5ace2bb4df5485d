"""What a generated pipeline says, decided as data before any text is rendered."""

from __future__ import annotations

import pytest

from imagekit.ci import release_version
from imagekit.ci.context import Include, ProcessorEntry, pipeline_context
from imagekit.errors import InputError

COMPONENT = Include(kind="component", address="gitlab.example.org/imagekit/ci-templates/imagekit@1")


def test_a_processor_alone_keeps_every_default() -> None:
    context = pipeline_context(
        [ProcessorEntry(name="olci", directory=".")], include=COMPONENT, image="img:1", command="c"
    )
    (only,) = context.processors
    assert only.model_dump() == {
        "name": "olci",
        "processor_dir": None,
        "image": "img:1",
        "job_prefix": None,
        "changes": None,
        "tag_prefix": None,
    }
    assert context.source == "processor.yaml"


def test_processors_side_by_side_get_prefixed_jobs_change_rules_and_tags_in_directory_order() -> None:
    context = pipeline_context(
        [
            ProcessorEntry(name="sst", directory="procs/sst"),
            ProcessorEntry(name="olci", directory="procs/olci"),
        ],
        include=COMPONENT,
        image="img:1",
        command="c",
    )
    assert [(p.name, p.processor_dir, p.job_prefix, p.changes, p.tag_prefix) for p in context.processors] == [
        ("olci", "procs/olci", "olci:", "procs/olci/**/*", "olci\\/"),
        ("sst", "procs/sst", "sst:", "procs/sst/**/*", "sst\\/"),
    ]
    assert context.source == "procs/*/processor.yaml (2 processors)"


def test_one_processor_in_a_subdirectory_names_it() -> None:
    context = pipeline_context(
        [ProcessorEntry(name="olci", directory="procs/olci")], include=COMPONENT, image="i", command="c"
    )
    assert context.processors[0].processor_dir == "procs/olci"
    assert context.processors[0].job_prefix is None
    assert context.source == "procs/olci/processor.yaml"


@pytest.mark.parametrize("tag", ["v1.2.0", "olci/v1.2.0"])
def test_a_release_tag_names_the_manifest_version(tag: str) -> None:
    assert release_version(tag, name="olci", version="1.2.0", manifest="p.yaml") == "1.2.0"


@pytest.mark.parametrize(
    ("tag", "says"),
    [
        ("v1.3.0", "does not match processor.version 1.2.0 in p.yaml: tag the commit v1.2.0"),
        ("olci/v1.2.1", "tag the commit olci/v1.2.0"),
        ("sst/v1.2.0", "is for processor 'sst', not 'olci'"),
        ("1.2.0", "expected v<version>"),
        ("v", "expected v<version>"),
    ],
)
def test_a_wrong_release_tag_fails_saying_what_to_do(tag: str, says: str) -> None:
    with pytest.raises(InputError, match="release tag") as refused:
        release_version(tag, name="olci", version="1.2.0", manifest="p.yaml")
    assert says in refused.value.message
    assert refused.value.exit_code == 2

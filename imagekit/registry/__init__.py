"""The registry step: push a scanned local image, move channels, keep the history, list releases.

The registry is the truth: every decision here reads it, never local state. `RegistryClient` is the
one way to talk to a registry (others, e.g. the CVMFS publisher, pull with it).
"""

from imagekit.registry.channels import (
    Move,
    MoveResult,
    Target,
    history,
    previous_digest,
    promote,
    resolve,
    rollback,
)
from imagekit.registry.client import ACCEPT, BlobStream, Credentials, Manifest, RegistryClient
from imagekit.registry.names import history_repository, repository
from imagekit.registry.push import PushResult, push, tag_existing
from imagekit.registry.releases import Releases, processors, releases
from imagekit.registry.renders import pushed_render, record_render
from imagekit.registry.scanstate import RegistryScan, read_sbom, read_scan, read_scan_record

__all__ = [
    "ACCEPT",
    "BlobStream",
    "Credentials",
    "Manifest",
    "Move",
    "MoveResult",
    "PushResult",
    "RegistryClient",
    "RegistryScan",
    "Releases",
    "Target",
    "history",
    "history_repository",
    "previous_digest",
    "processors",
    "promote",
    "push",
    "pushed_render",
    "read_sbom",
    "read_scan",
    "read_scan_record",
    "record_render",
    "releases",
    "repository",
    "resolve",
    "rollback",
    "tag_existing",
]

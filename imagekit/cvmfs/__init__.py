"""The CVMFS step: registry digest → flattened, DUCC-compatible tree (issue 11).

Public surface: `publish` (one image), `published` (its receipt, or None), `move_channel` (the CVMFS
half of promote/rollback), `verify` and `gc`. The backend (`cvmfs.backend`: local | cvmfs_server) and
the tree's place (`cvmfs.repository`, `cvmfs.root`) come from the profile.
"""

from imagekit.cvmfs.backends import Revision, backend_for
from imagekit.cvmfs.flatten import UnsafeLayer
from imagekit.cvmfs.maintain import GcPlan, VerifyResult, gc, verify
from imagekit.cvmfs.publish import (
    Publication,
    PublishResult,
    channel_version,
    clear_channel,
    move_channel,
    publish,
    published,
    revision,
)

__all__ = [
    "GcPlan",
    "Publication",
    "PublishResult",
    "Revision",
    "UnsafeLayer",
    "VerifyResult",
    "backend_for",
    "channel_version",
    "clear_channel",
    "gc",
    "move_channel",
    "publish",
    "published",
    "revision",
    "verify",
]

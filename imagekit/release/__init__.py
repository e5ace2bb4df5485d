"""The release: every step in order for one processor, channels that move registry and tree together,
and the operator's views of what is where (inspect, status).

This package only chains the steps' public surfaces; no step reaches into another.
"""

from imagekit.release.channels import ChannelMove, promote, rollback
from imagekit.release.run import STEPS, Released, release
from imagekit.release.view import Inspection, StatusRow, inspect, receipts, status

__all__ = [
    "STEPS",
    "ChannelMove",
    "Inspection",
    "Released",
    "StatusRow",
    "inspect",
    "promote",
    "receipts",
    "release",
    "rollback",
    "status",
]

"""Security scanning with Trivy: the gate between a built image and the registry (issue 6).

The CLI calls `scan_image` (exit 0 passed, 3 `ScanFailed`, 2 `InputError`, 1 `ToolError`); the push
step calls `require_passed`. Policy: `load_policy(site, processor_dir / PROCESSOR_POLICY_FILE)`.
"""

from imagekit.scan.decision import Decision, Verdict, decide
from imagekit.scan.findings import Finding
from imagekit.scan.image import ScanFailed, ScanResult, scan_image
from imagekit.scan.policy import PROCESSOR_POLICY_FILE, AllowEntry, Policy, default_policy_path, load_policy
from imagekit.scan.status import require_passed, scan_status

__all__ = [
    "PROCESSOR_POLICY_FILE",
    "AllowEntry",
    "Decision",
    "Finding",
    "Policy",
    "ScanFailed",
    "ScanResult",
    "Verdict",
    "decide",
    "default_policy_path",
    "load_policy",
    "require_passed",
    "scan_image",
    "scan_status",
]

"""Security scanning with Trivy: the gate between a built image and the registry (issue 6).

The CLI calls `scan_image` (exit 0 passed, 3 `ScanFailed`, 2 `InputError`, 1 `ToolError`). Policy:
`load_policy(site, processor_dir / PROCESSOR_POLICY_FILE)`. Later steps (push, promote) call

    require_passed(image, data_dir, *, skip_reason: str | None,
                   require_vulnerabilities_checked: bool = False,
                   engine: Engine | None = None) -> ScanStatus

with `image` a local image name (its id as `engine` says: docker, podman or buildah, Docker's by
default) or a `sha256:` image id. It returns the `ScanStatus` ("passed",
"passed, vulnerabilities not checked", "failed" or "not scanned") when the step may go on: on a pass,
on a pass without vulnerability checks unless `require_vulnerabilities_checked` (the last channel),
or on any status with a non-blank `skip_reason` (record it). Otherwise it raises PolicyError (exit 3);
a blank reason is InputError (exit 2), a corrupt status record ToolError (exit 1).
`scan_status(image, data_dir)` only reads the status.
"""

from imagekit.scan.decision import Decision, Verdict, decide
from imagekit.scan.findings import Finding
from imagekit.scan.image import ScanFailed, ScanResult, scan_image
from imagekit.scan.policy import PROCESSOR_POLICY_FILE, AllowEntry, Policy, default_policy_path, load_policy
from imagekit.scan.status import ScanStatus, require_passed, scan_status
from imagekit.scan.trivy import trivy_binary

__all__ = [
    "PROCESSOR_POLICY_FILE",
    "AllowEntry",
    "Decision",
    "Finding",
    "Policy",
    "ScanFailed",
    "ScanResult",
    "ScanStatus",
    "Verdict",
    "decide",
    "default_policy_path",
    "load_policy",
    "require_passed",
    "scan_image",
    "scan_status",
    "trivy_binary",
]

"""Build a small real Trivy DB and publish it as the OCI artifact trivy pulls with --db-repository.

The artifact has the shape trivy-db publishes: an OCI image manifest whose single layer is
`db.tar.gz` (trivy.db + metadata.json), media type `application/vnd.aquasec.trivy.db.layer.v1.tar+gzip`,
titled by the `org.opencontainers.image.title` annotation (trivy names the download after it).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from datetime import datetime
from pathlib import Path

import httpx

GO_SOURCE = Path(__file__).resolve().parents[1] / "trivydb" / "main.go"
CONFIG_MEDIA_TYPE = "application/vnd.aquasec.trivy.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


def _run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")


def build_loader(out_dir: Path) -> Path:
    """Compile tests/trivydb/main.go with Debian's Go and bbolt (GOPATH mode: no module download)."""
    binary = out_dir / "trivydb"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": "/usr/share/gocode",
        "GOCACHE": str(out_dir / "gocache"),
        "GOFLAGS": "",
    }
    _run(["go", "build", "-o", str(binary), str(GO_SOURCE)], cwd=GO_SOURCE.parent, env=env)
    return binary


def build_db(
    loader: Path,
    out_dir: Path,
    advisories: list[dict[str, str]],
    *,
    updated_at: datetime,
    next_update: datetime,
) -> bytes:
    """Run the loader and return db.tar.gz as trivy expects it."""
    spec = out_dir / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "updated_at": updated_at.isoformat(),
                "next_update": next_update.isoformat(),
                "advisories": advisories,
            }
        )
    )
    _run([str(loader), "-spec", str(spec), "-out", str(out_dir)])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ("trivy.db", "metadata.json"):
            tar.add(out_dir / name, arcname=name)
    return buffer.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _upload_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    digest = _digest(data)
    start = client.post(f"/v2/{repo}/blobs/uploads/")
    start.raise_for_status()
    location = httpx.URL(start.headers["Location"]).copy_merge_params({"digest": digest})
    done = client.put(location, content=data, headers={"Content-Type": "application/octet-stream"})
    done.raise_for_status()
    return digest


def push_db(registry: str, repo: str, tag: str, db_tar_gz: bytes) -> str:
    """Push db.tar.gz to http://<registry>/<repo>:<tag>; returns the manifest digest."""
    config = b"{}"
    with httpx.Client(base_url=f"http://{registry}", timeout=30) as client:
        config_digest = _upload_blob(client, repo, config)
        layer_digest = _upload_blob(client, repo, db_tar_gz)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "artifactType": CONFIG_MEDIA_TYPE,
                "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
                "layers": [
                    {
                        "mediaType": LAYER_MEDIA_TYPE,
                        "digest": layer_digest,
                        "size": len(db_tar_gz),
                        "annotations": {"org.opencontainers.image.title": "db.tar.gz"},
                    }
                ],
            }
        ).encode()
        response = client.put(
            f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": MANIFEST_MEDIA_TYPE}
        )
        response.raise_for_status()
    return _digest(manifest)


def delete_repo_tags(registry: str, repo: str) -> None:
    """Delete every manifest of repo (best effort: a registry may not allow deletes)."""
    accept = {"Accept": MANIFEST_MEDIA_TYPE}
    with httpx.Client(base_url=f"http://{registry}", timeout=30) as client:
        tags = client.get(f"/v2/{repo}/tags/list")
        if tags.status_code != 200:
            return
        for tag in tags.json().get("tags") or []:
            head = client.head(f"/v2/{repo}/manifests/{tag}", headers=accept)
            digest = head.headers.get("Docker-Content-Digest")
            if digest:
                client.delete(f"/v2/{repo}/manifests/{digest}")

"""Blob downloads from a real registry: `read(size)` gives exactly what was asked in whatever pieces the
socket delivers, a blob whose bytes do not match its digest is refused, and a download cut off midway
(the registry killed) is a ToolError naming the blob, never an HTTP library's traceback."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable

import pytest
from registry_parts import OwnRegistry

from imagekit.errors import ToolError
from imagekit.registry import RegistryClient

REPOSITORY = "imagekit-test/blob-stream"


def _upload(client: RegistryClient, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client.upload_blob(REPOSITORY, digest, data)
    return digest


def test_reads_of_any_size_give_the_blob_byte_for_byte(own_registry: Callable[..., OwnRegistry]) -> None:
    registry = own_registry()
    data = random.Random(7).randbytes(3 * 1024 * 1024 + 12_345)
    sizes = [1, 511, 65_536, 65_537, 1 << 20, 3, (1 << 20) + 777]
    with RegistryClient(registry.url, insecure=True) as client:
        digest = _upload(client, data)
        with client.blob(REPOSITORY, digest) as stream:
            pieces = [stream.read(size) for size in sizes]
            assert [len(piece) for piece in pieces] == sizes  # never short before the end
            pieces.append(stream.read())  # the rest
            assert stream.read(10) == b"" and stream.read() == b""
        assert b"".join(pieces) == data
        with client.blob(REPOSITORY, digest) as stream:  # read half, leave the rest: still checked
            assert stream.read(len(data) // 2) == data[: len(data) // 2]


def test_a_blob_that_does_not_match_its_digest_is_refused(own_registry: Callable[..., OwnRegistry]) -> None:
    registry = own_registry()
    data = os.urandom(200_000)
    with RegistryClient(registry.url, insecure=True) as client:
        digest = _upload(client, data)
        hex_ = digest.split(":", 1)[1]
        stored = registry.root / "storage/docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"
        stored.write_bytes(bytes(len(data)))  # same length, other bytes
        with pytest.raises(ToolError) as refused, client.blob(REPOSITORY, digest) as stream:
            while stream.read(65_536):
                pass
    assert f"blob {digest} arrived with digest sha256:" in refused.value.message


def test_a_download_cut_off_midway_is_a_tool_error(own_registry: Callable[..., OwnRegistry]) -> None:
    registry = own_registry()
    data = os.urandom(64 * 1024 * 1024)  # far more than the socket buffers hold once the registry dies
    with RegistryClient(registry.url, insecure=True, retries=0) as client:
        digest = _upload(client, data)
        with pytest.raises(ToolError) as refused, client.blob(REPOSITORY, digest) as stream:
            assert stream.read(1 << 20) == data[: 1 << 20]
            registry.stop()
            while stream.read(1 << 20):
                pass
    message = refused.value.message
    assert f"blob {digest} broke off after " in message and "RemoteProtocolError" in message, message

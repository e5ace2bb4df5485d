"""RegistryClient: the OCI distribution API over httpx, the one way imagekit talks to any registry.

Manifests are fetched with the full Accept header and kept as the exact bytes served, their digest
checked, so a channel move re-PUTs what the registry holds (never a down-converted copy). Blobs are
verified against their digest while they are read. Basic auth, or a bearer token where the registry
asks for one; credentials come only from the variables the profile names and appear in no message.
Transient failures (5xx, connection errors) are retried a bounded number of times with backoff.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from imagekit.config import Profile
from imagekit.errors import InputError, ToolError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
ACCEPT = ", ".join(MANIFEST_TYPES)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
RETRY_STATUS = frozenset({500, 502, 503, 504})
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as the registry serves it."""

    raw: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        data = json.loads(self.raw)
        if not isinstance(data, dict):
            raise ToolError(f"manifest {self.digest} is not a JSON object")
        return data


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _NoCookies(CookieJar):
    """Keeps nothing: a registry (Harbor) checks CSRF on cookie sessions; API clients must not have one."""

    def set_cookie(self, cookie: Any) -> None:
        return None


@dataclass(frozen=True)
class Credentials:
    """Where the secret comes from (variable names, shown in errors) and, if set, the values."""

    username_env: str
    password_env: str
    username: str = ""
    password: str = ""

    @property
    def present(self) -> bool:
        return bool(self.username and self.password)

    @property
    def names(self) -> str:
        return f"{self.username_env} and {self.password_env}"


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class _RegistryAuth(httpx.Auth):
    """Answers the registry's 401 challenge: Basic, or a Bearer token fetched from its realm."""

    def __init__(self, host: str, credentials: Credentials, *, push: bool) -> None:
        self.host = host
        self.credentials = credentials
        self.push = push
        self.header = ""

    def _basic(self) -> str:
        pair = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.header:
            request.headers["Authorization"] = self.header
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = _challenge(response.headers.get("www-authenticate", ""))
        sent_credentials = bool(self.header)
        if scheme == "basic":
            if not self.credentials.present:
                raise _needs_credentials(self.host, self.credentials)
            self.header = self._basic()
        elif scheme == "bearer" and params.get("realm"):
            query = {"service": params.get("service", "")}
            scope = params.get("scope", "")
            if scope and self.push:
                scope = scope.replace(":pull", ":pull,push").replace("push,push", "push")
            token_request = httpx.Request("GET", params["realm"], params={**query, "scope": scope})
            if self.credentials.present:
                token_request.headers["Authorization"] = self._basic()
            token_response = yield token_request
            if token_response.status_code in (401, 403):
                raise _refused(self.host, self.credentials)
            token_response.read()
            try:
                body = token_response.json()
                token = body.get("token") or body.get("access_token")
            except ValueError:
                token = None
            if token_response.status_code != 200 or not token:
                raise ToolError(
                    f"registry {self.host}: its token service {params['realm']} answered "
                    f"HTTP {token_response.status_code} without a token"
                )
            self.header = f"Bearer {token}"
        else:
            raise ToolError(
                f"registry {self.host} asks for an authentication scheme imagekit lacks: {scheme}"
            )
        request.headers["Authorization"] = self.header
        response = yield request
        if response.status_code == 401:
            if not self.credentials.present and not sent_credentials:
                raise _needs_credentials(self.host, self.credentials)
            raise _refused(self.host, self.credentials)


def _needs_credentials(host: str, credentials: Credentials) -> InputError:
    return InputError(f"registry {host} asks for credentials: set {credentials.names}")


def _refused(host: str, credentials: Credentials) -> InputError:
    return InputError(
        f"registry {host} refused the credentials in {credentials.names}: check their values "
        "(never shown) and the account's permissions"
    )


class _PlainHTTP(httpx.BaseTransport):
    """One pool for a plain-HTTP (loopback) registry that builds no SSL context: loading the CA bundle
    costs ~0.07 s per client. An https URL (a redirect to blob storage) gets a verifying pool, made once."""

    def __init__(self, verify: bool | str) -> None:
        self._verify = verify
        self._plain = httpx.HTTPTransport(verify=False)  # never used for TLS: only http:// comes here
        self._tls: httpx.HTTPTransport | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            return self._plain.handle_request(request)
        if self._tls is None:
            self._tls = httpx.HTTPTransport(verify=self._verify)
        return self._tls.handle_request(request)

    def close(self) -> None:
        self._plain.close()
        if self._tls is not None:
            self._tls.close()


class RegistryClient:
    """One registry, one httpx session; every call retried on transient failures."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        push: bool = False,
        retries: int = 4,
        backoff: float = 0.25,
        timeout: float = 60.0,
        verify: bool | str = True,
        on_request: Callable[[httpx.Request], None] | None = None,
    ) -> None:
        self.host = host
        self.base = f"{'http' if insecure else 'https'}://{host}"
        self.retries = retries
        self.backoff = backoff
        self.credentials = credentials or Credentials("", "")
        hooks = {"request": [on_request]} if on_request else {}
        self.http = httpx.Client(
            auth=_RegistryAuth(host, self.credentials, push=push),
            cookies=_NoCookies(),
            timeout=timeout,
            verify=verify,
            follow_redirects=True,
            event_hooks=hooks,
            transport=_PlainHTTP(verify) if insecure else None,
        )

    @classmethod
    def from_profile(
        cls, profile: Profile, *, env: Mapping[str, str] | None = None, push: bool = False, **kwargs: Any
    ) -> RegistryClient:
        env = os.environ if env is None else env
        settings = profile.registry
        credentials = Credentials(
            settings.username_env,
            settings.password_env,
            env.get(settings.username_env, ""),
            env.get(settings.password_env, ""),
        )
        return cls(settings.url, insecure=settings.insecure, credentials=credentials, push=push, **kwargs)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- transport -----------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base + path

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call, retried with exponential backoff on 5xx and connection errors."""
        what = f"{method} {self.host}{path.split('?')[0] if path.startswith('/') else ''}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.http.request(method, self._url(path), **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise ToolError(
                        f"registry {self.host} unreachable: {what} failed after "
                        f"{self.retries + 1} tries: {type(exc).__name__}: {exc}"
                    ) from exc
            else:
                if response.status_code not in RETRY_STATUS:
                    return response
                if last:
                    raise ToolError(
                        f"registry {self.host}: {what} answered HTTP {response.status_code} "
                        f"{self.retries + 1} times: {_errors(response)}"
                    )
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _fail(self, response: httpx.Response, doing: str) -> ToolError:
        return ToolError(f"registry {self.host}: {doing}: HTTP {response.status_code} {_errors(response)}")

    # --- API -----------------------------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/: reachable, speaks the API, accepts our credentials."""
        response = self.request("GET", "/v2/")
        if response.status_code != 200:
            raise self._fail(response, "GET /v2/")

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest `reference` resolves to, or None where there is no such manifest."""
        response = self.request("HEAD", f"/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, f"HEAD {repository}:{reference}")
        digest = response.headers.get("docker-content-digest", "")
        if DIGEST.match(digest):
            return digest
        return self.manifest(repository, reference).digest

    def find_manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest exactly as served, or None where there is none."""
        response = self.request("GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, f"GET manifest {repository}:{reference}")
        raw = response.content
        digest = sha256_digest(raw)
        expected = reference if DIGEST.match(reference) else response.headers.get("docker-content-digest")
        if expected and expected != digest:
            raise ToolError(
                f"registry {self.host}: manifest {repository}:{reference} has digest {digest}, "
                f"the registry says {expected}"
            )
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            media_type = str(json.loads(raw).get("mediaType", media_type))
        return Manifest(raw=raw, media_type=media_type, digest=digest)

    def manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest exactly as served; InputError (exit 2) where the reference does not exist."""
        found = self.find_manifest(repository, reference)
        if found is None:
            raise InputError(f"{self.host}/{repository}:{reference} does not exist")
        return found

    def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> str:
        """PUT these exact bytes; returns their digest, checked against what the registry says."""
        response = self.put_manifest_response(repository, reference, raw, media_type)
        digest = sha256_digest(raw)
        said = response.headers.get("docker-content-digest")
        if said and said != digest:
            raise ToolError(f"registry {self.host} stored {repository}:{reference} as {said}, not {digest}")
        return digest

    def put_manifest_response(
        self, repository: str, reference: str, raw: bytes, media_type: str
    ) -> httpx.Response:
        """PUT a manifest and return the response (its headers tell whether `subject` was processed)."""
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            content=raw,
            headers={"Content-Type": media_type},
        )
        if response.status_code not in (200, 201):
            raise self._fail(response, f"PUT manifest {repository}:{reference}")
        return response

    def delete_manifest(self, repository: str, digest: str) -> bool:
        response = self.request("DELETE", f"/v2/{repository}/manifests/{digest}")
        if response.status_code in (202, 200):
            return True
        if response.status_code == 404:
            return False
        raise self._fail(response, f"DELETE {repository}@{digest}")

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}")
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._fail(response, f"HEAD blob {repository}@{digest}")

    def upload_blob(self, repository: str, digest: str, source: Path | bytes) -> int:
        """Monolithic upload (POST then PUT); restarts whole on a transient failure. Returns bytes sent."""
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        for attempt in range(self.retries + 1):
            start = self.request("POST", f"/v2/{repository}/blobs/uploads/")
            if start.status_code != 202 or "location" not in start.headers:
                raise self._fail(start, f"start upload to {repository}")
            location = urljoin(self.base + "/", start.headers["location"])
            joiner = "&" if "?" in location else "?"
            try:
                response = self.http.put(
                    f"{location}{joiner}digest={digest}",
                    content=source if isinstance(source, bytes) else _read_file(source),
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                )
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ToolError(
                        f"registry {self.host} unreachable: upload of {digest} to {repository} failed "
                        f"after {self.retries + 1} tries: {type(exc).__name__}: {exc}"
                    ) from exc
            else:
                if response.status_code == 201:
                    return size
                if response.status_code not in RETRY_STATUS or attempt == self.retries:
                    raise self._fail(response, f"upload {digest} to {repository}")
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    @contextmanager
    def blob(self, repository: str, digest: str) -> Iterator[BlobStream]:
        """A readable stream of the blob; ToolError at the end if its bytes do not match `digest`."""
        if not DIGEST.match(digest):
            raise InputError(f"not a sha256 digest: {digest}")
        for attempt in range(self.retries + 1):
            try:
                request = self.http.build_request("GET", self._url(f"/v2/{repository}/blobs/{digest}"))
                response = self.http.send(request, stream=True)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ToolError(f"registry {self.host} unreachable: GET blob {digest}: {exc}") from exc
                time.sleep(self.backoff * 2**attempt)
                continue
            if response.status_code in RETRY_STATUS and attempt < self.retries:
                response.close()
                time.sleep(self.backoff * 2**attempt)
                continue
            break
        try:
            if response.status_code == 404:
                raise InputError(f"{self.host}/{repository}@{digest}: no such blob")
            if response.status_code != 200:
                response.read()
                raise self._fail(response, f"GET blob {repository}@{digest}")
            stream = BlobStream(response, digest, self.host)
            yield stream
            stream.finish()
        finally:
            response.close()

    def tags(self, repository: str) -> list[str]:
        """Every tag of the repository (following pagination); [] if the repository does not exist."""
        found: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list?n=1000"
        while path:
            response = self.request("GET", path)
            if response.status_code == 404:
                return found
            if response.status_code != 200:
                raise self._fail(response, f"list tags of {repository}")
            found += response.json().get("tags") or []
            link = response.headers.get("link", "")
            match = re.match(r"<([^>]+)>", link)
            path = match.group(1) if match else None
        return found

    def referrers(self, repository: str, digest: str) -> list[dict[str, Any]] | None:
        """The referrers API's descriptors for `digest`, or None where the registry lacks the API."""
        response = self.request("GET", f"/v2/{repository}/referrers/{digest}", headers={"Accept": OCI_INDEX})
        if response.status_code == 404 or not response.headers.get("content-type", "").startswith(OCI_INDEX):
            return None
        if response.status_code != 200:
            raise self._fail(response, f"referrers of {repository}@{digest}")
        manifests = response.json().get("manifests") or []
        return [m for m in manifests if isinstance(m, dict)]


def _read_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk


class BlobStream:
    """A file-like view of a blob response that hashes what passes through it.

    The pieces are taken as the socket delivers them and joined once per `read`: re-chunking them
    and growing one bytes object per piece copied every byte several times (a third of a download's
    CPU). httpcore's 64 kB socket reads stay: 1 MiB reads saved under a tenth of that."""

    def __init__(self, response: httpx.Response, digest: str, host: str) -> None:
        self._pieces = response.iter_bytes()
        self._held: deque[bytes] = deque()
        self._held_bytes = 0
        self._received = 0
        self._hash = hashlib.sha256()
        self._digest = digest
        self._host = host
        self._done = False

    def _next(self) -> bytes | None:
        try:
            piece = next(self._pieces, None)
        except httpx.TransportError as exc:  # the connection broke off or stalled mid-body
            raise ToolError(
                f"registry {self._host}: blob {self._digest} broke off after {self._received} bytes: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if piece is not None:
            self._hash.update(piece)
            self._received += len(piece)
        return piece

    def read(self, size: int = -1) -> bytes:
        """`size` bytes (all that is left if fewer, or if `size` < 0); b"" at the end."""
        while not self._done and (size < 0 or self._held_bytes < size):
            piece = self._next()
            if piece is None:
                self._done = True
            else:
                self._held.append(piece)
                self._held_bytes += len(piece)
        want = self._held_bytes if size < 0 else min(size, self._held_bytes)
        taken: list[bytes] = []
        while want > 0:
            piece = self._held.popleft()
            if len(piece) > want:  # only the piece that straddles `size` is split
                self._held.appendleft(piece[want:])
                piece = piece[:want]
            taken.append(piece)
            want -= len(piece)
            self._held_bytes -= len(piece)
        return taken[0] if len(taken) == 1 else b"".join(taken)

    def readable(self) -> bool:
        return True

    def finish(self) -> None:
        """Drain what the reader left and compare digests."""
        while self.read(CHUNK):
            pass
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._digest:
            raise ToolError(f"registry {self._host}: blob {self._digest} arrived with digest {actual}")


def _errors(response: httpx.Response) -> str:
    """The registry's own error codes and messages, never request headers (they may hold a token)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip() for e in errors[:3])
    return json.dumps(body)[:200]

"""Where artifacts' sealed bytes live: one port, two adapters.

    ObjectStore.put(key, data) / get(key) / delete(key) / keys(prefix)

Keys are `orgs/<tenant_id>/artifacts/<artifact_id>`, made only by `object_key` from two UUIDs:
no name a tenant chooses is ever part of one. What is stored is already sealed under the
tenant's key (`tenantguard.artifacts.service`); a store never sees plaintext.

- `LocalStore`: files under `<data_root>/`, each directory opened from the one above with
  `O_NOFOLLOW` (a symbolic link planted anywhere on the way is refused by the kernel, not
  followed), written to a temporary file and renamed into place.
- `S3Store`: any S3-compatible server, path-style (`<endpoint>/<bucket>/<key>`), SigV4, no
  flexible checksums (none of PutObject, GetObject, DeleteObject and ListObjectsV2 requires
  one), through the one egress transport: a private endpoint is reachable only through the
  grant the operator configures for it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit
from uuid import UUID
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeXml
import httpx
import structlog

from tenantguard.artifacts.sigv4 import Credentials, Request, sign
from tenantguard.clock import Clock, SystemClock
from tenantguard.egress.check import EgressDenied, EgressGrant, EgressPolicy
from tenantguard.egress.transport import egress_client
from tenantguard.errors import ConfigurationError, NotFound, ServiceUnavailable

_log = structlog.get_logger("tenantguard.artifacts")
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class ArtifactStoreUnavailable(ServiceUnavailable):
    code = "artifact_store_unavailable"
    title = "Artifact store unavailable"
    default_detail = "The artifact store cannot be reached; nothing was stored or read."


class ArtifactPathRefused(ArtifactStoreUnavailable):
    """A link, or something not a plain file or directory, on an artifact's path: refused and
    logged as an attack on the store (the request fails closed, answered as unavailable)."""


def s3_policy(endpoint: str, network: str | None, max_bytes: int) -> EgressPolicy:
    """The egress policy of the S3 client: the endpoint's port only, and its private network
    only if the operator granted it (`TENANTGUARD_S3_NETWORK`)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigurationError("TENANTGUARD_S3_ENDPOINT is http(s)://host[:port], no path")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        grants = () if network is None else (EgressGrant.of(network, [port]),)
    except ValueError as bad:
        raise ConfigurationError(
            "TENANTGUARD_S3_NETWORK is not a network that can be granted"
        ) from bad
    return EgressPolicy(
        allowed_ports=frozenset({port}),
        grants=grants,
        max_response_bytes=max_bytes + 1_048_576,  # a sealed artifact, or a page of a listing
        timeout_seconds=30.0,
        max_redirects=0,
    )


def object_key(tenant_id: UUID, artifact_id: UUID | None = None) -> str:
    """An artifact's key, or (without one) the prefix of every artifact of the tenant."""
    prefix = f"orgs/{tenant_id}/artifacts/"
    return prefix if artifact_id is None else prefix + str(artifact_id)


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...  # NotFound if absent
    def delete(self, key: str) -> None: ...  # absent is fine
    def keys(self, prefix: str) -> list[str]: ...
    def close(self) -> None: ...


def _parts(key: str) -> tuple[str, ...]:
    parts = tuple(key.split("/"))
    if not key or any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise ArtifactPathRefused()  # never made by object_key: a bug or an attack
    return parts


class LocalStore:
    """Sealed artifacts as files under `root` (the data root)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def _directory(self, parts: tuple[str, ...], *, create: bool) -> Iterator[int]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root, _DIRECTORY)
        try:
            for part in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, mode=0o700, dir_fd=fd)
                try:
                    inner = os.open(part, _DIRECTORY, dir_fd=fd)
                except OSError as exc:
                    if exc.errno == errno.ENOENT:
                        raise NotFound() from exc
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        _log.error("artifacts.link_refused", part=part)
                        raise ArtifactPathRefused() from exc
                    raise
                os.close(fd)
                fd = inner
            yield fd
        finally:
            os.close(fd)

    def put(self, key: str, data: bytes) -> None:
        *dirs, name = _parts(key)
        with self._directory(tuple(dirs), create=True) as fd:
            temporary = f".tg-{secrets.token_hex(8)}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out = os.open(temporary, flags, 0o600, dir_fd=fd)
            try:
                with os.fdopen(out, "wb", closefd=False) as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(out)
            except BaseException:
                os.close(out)
                os.unlink(temporary, dir_fd=fd)
                raise
            os.close(out)
            os.rename(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
            os.fsync(fd)

    def get(self, key: str) -> bytes:
        *dirs, name = _parts(key)
        with self._directory(tuple(dirs), create=False) as fd:
            try:
                handle = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    raise NotFound() from exc
                _log.error("artifacts.link_refused", part=name)
                raise ArtifactPathRefused() from exc
            try:
                info = os.fstat(handle)
                if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                    _log.error("artifacts.not_a_file", part=name)
                    raise ArtifactPathRefused()
                with os.fdopen(handle, "rb", closefd=False) as reader:
                    return reader.read()
            finally:
                os.close(handle)

    def delete(self, key: str) -> None:
        *dirs, name = _parts(key)
        try:
            with (
                self._directory(tuple(dirs), create=False) as fd,
                contextlib.suppress(FileNotFoundError),
            ):
                os.unlink(name, dir_fd=fd)
        except NotFound:
            return

    def keys(self, prefix: str) -> list[str]:
        """Every file under the directory `prefix` names (which ends with a slash)."""
        parts = _parts(prefix.rstrip("/"))
        try:
            with self._directory(parts, create=False) as fd:
                names = os.listdir(fd)
        except NotFound:
            return []
        return sorted(prefix + n for n in names)

    def close(self) -> None:
        pass


class S3Store:
    """Sealed artifacts as objects in an S3-compatible bucket, path-style, signed with SigV4."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        creds: Credentials,
        *,
        policy: EgressPolicy,
        prefix: str = "",
        clock: Clock | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix
        self._creds = creds
        self._clock = clock or SystemClock()  # a signature's time is the wall clock's
        self._client = egress_client(policy, follow_redirects=False)
        self.page_size = 1000  # keys per listing page (S3's own maximum)

    def close(self) -> None:
        self._client.close()

    def _url(self, key: str = "", query: str = "") -> str:
        path = quote(f"/{self.bucket}/{self.prefix}{key}" if key else f"/{self.bucket}", safe="/")
        return f"{self.endpoint}{path}" + (f"?{query}" if query else "")

    def _send(self, method: str, url: str, body: bytes = b"", **headers: str) -> httpx.Response:
        digest = hashlib.sha256(body).hexdigest()
        signed = sign(Request(method, url, headers, digest), self._creds, self._now())
        try:
            response = self._client.request(method, url, content=body, headers=signed)
        except (httpx.HTTPError, EgressDenied) as exc:
            _log.error("artifacts.s3_unreachable", error=type(exc).__name__)
            raise ArtifactStoreUnavailable() from exc
        return response

    def _now(self) -> datetime:
        return self._clock.now()

    @staticmethod
    def _fail(response: httpx.Response, operation: str) -> ArtifactStoreUnavailable:
        code = ""
        with contextlib.suppress(Exception):
            found = SafeXml.fromstring(response.content).find("Code")
            code = (found.text or "") if found is not None else ""
        _log.error(
            "artifacts.s3_refused", operation=operation, status=response.status_code, code=code
        )
        return ArtifactStoreUnavailable()

    def create_bucket(self) -> None:
        """For tests and first set-up: make the bucket (an existing one of ours is fine)."""
        response = self._send("PUT", self._url())
        if response.status_code not in (200, 409):
            raise self._fail(response, "CreateBucket")

    def put(self, key: str, data: bytes) -> None:
        _parts(key)
        response = self._send(
            "PUT", self._url(key), data, **{"content-type": "application/octet-stream"}
        )
        if response.status_code != 200:
            raise self._fail(response, "PutObject")

    def get(self, key: str) -> bytes:
        _parts(key)
        response = self._send("GET", self._url(key))
        if response.status_code == 404:
            raise NotFound()
        if response.status_code != 200:
            raise self._fail(response, "GetObject")
        return response.content

    def delete(self, key: str) -> None:
        _parts(key)
        response = self._send("DELETE", self._url(key))
        if response.status_code not in (204, 200, 404):
            raise self._fail(response, "DeleteObject")

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        token = ""
        while True:
            query = f"list-type=2&max-keys={self.page_size}&prefix=" + quote(
                self.prefix + prefix, safe=""
            )
            if token:
                query += "&continuation-token=" + quote(token, safe="")
            response = self._send("GET", self._url(query=query))
            if response.status_code != 200:
                raise self._fail(response, "ListObjectsV2")
            root: Element = SafeXml.fromstring(response.content)
            for item in root.iter(f"{_S3}Key"):
                key = item.text or ""
                found.append(key.removeprefix(self.prefix))
            truncated = root.find(f"{_S3}IsTruncated")
            next_token = root.find(f"{_S3}NextContinuationToken")
            if truncated is None or truncated.text != "true" or next_token is None:
                return sorted(found)
            token = next_token.text or ""

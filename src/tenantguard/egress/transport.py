"""The one HTTP transport for every outbound call: it resolves, checks, pins, and bounds.

For each request (each redirect hop included, since httpx hands every hop to the transport):

1. `check_url`: scheme, credentials in the URL, port, the tenant's host lists;
2. the transport resolves the name itself, once (`resolve`: the system resolver, which also
   turns `2130706433`, `0x7f.1` and `127.1` into the addresses they mean);
3. `check_addresses` on every address the name has;
4. it connects to exactly the address it checked: the URL's host becomes that address, while
   the `Host` header and the TLS server name (SNI, and so the certificate check) stay the
   name. A second DNS answer, different from the first, is never asked for: no rebinding.
5. The response is bounded: a `Content-Length` over the limit is refused before its body, a
   body that grows past it is cut with `EgressDenied("response_too_large")`, and a body still
   arriving after the policy's total time is cut with `EgressDenied("too_slow")`.

`egress_client` builds the only kind of client the product uses: this transport, redirects
followed within the policy's limit, and `trust_env=False`, so that no proxy variable in the
environment can route a request around the check.

Threat stopped: SSRF in all its encodings, DNS rebinding, redirects to internal addresses,
and outbound calls that exhaust the gateway's memory or time.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any

import httpx
import structlog

from tenantguard.egress.check import (
    EgressDenied,
    EgressPolicy,
    IPAddress,
    check_addresses,
    check_url,
)

Resolver = Callable[[str, int], list[IPAddress]]
_log = structlog.get_logger("tenantguard.egress")


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (the system resolver), in its order, once each."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise EgressDenied("resolution_failed") from exc
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in answers:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and len(sockaddr) >= 4 and sockaddr[3]:
            address = ipaddress.IPv6Address(f"{address}%{sockaddr[3]}")  # keep the scope
        if address not in found:
            found.append(address)
    return found


_DEADLINE = "tenantguard.egress.deadline"  # in the request's extensions: httpx carries them
# from hop to hop of a redirect chain, so one deadline covers the whole chain
# A request's head and body are separate writes: without TCP_NODELAY the body waits for the
# peer's delayed ACK of the head (40 ms on Linux), on every call.
_NO_DELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
_POOLS = 64  # connection pools kept, one per (name, address, port): never shared across names


class _Bounded(httpx.SyncByteStream):
    """The body, decoded here if it was compressed (gzip or deflate), cut at the size limit
    of the decoded bytes and at the deadline."""

    def __init__(
        self,
        inner: httpx.SyncByteStream,
        limit: int,
        deadline: float,
        clock: Callable[[], float],
        encoding: str,
    ) -> None:
        self._inner, self._limit, self._deadline, self._clock = inner, limit, deadline, clock
        self._decoder = (
            zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
            if encoding in ("gzip", "deflate")
            else None
        )

    def __iter__(self) -> Iterator[bytes]:
        total = 0
        for chunk in self._inner:
            if self._clock() > self._deadline:
                raise EgressDenied("too_slow")
            pieces = [chunk] if self._decoder is None else self._decode(chunk, total)
            for piece in pieces:
                total += len(piece)
                if total > self._limit:
                    raise EgressDenied("response_too_large")
                yield piece
        if self._decoder is not None:
            tail = self._decoder.flush()
            if total + len(tail) > self._limit:
                raise EgressDenied("response_too_large")
            yield tail

    def _decode(self, chunk: bytes, total: int) -> list[bytes]:
        assert self._decoder is not None  # noqa: S101 (only called with a decoder)
        out = []
        data = chunk
        while data:
            try:
                piece = self._decoder.decompress(data, self._limit - total + 1)
            except zlib.error as exc:
                raise EgressDenied("encoding_unsupported") from exc
            out.append(piece)
            total += len(piece)
            if total > self._limit:
                break  # the caller raises; nothing more is decompressed
            data = self._decoder.unconsumed_tail
        return out

    def close(self) -> None:
        self._inner.close()


class EgressTransport(httpx.BaseTransport):
    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolver: Resolver = resolve,
        verify: Any = True,  # httpx's own type: a bool, a CA bundle path or an SSLContext
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy, self._resolve, self._clock, self._verify = policy, resolver, clock, verify
        # TLS connections are keyed by (name, address, port): a connection verified for one
        # name is never reused for another name on the same address.
        self._pools: OrderedDict[tuple[str, str, int], httpx.HTTPTransport] = OrderedDict()
        self._lock = threading.Lock()
        self._workers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="tenantguard-egress")

    def _pool(self, key: tuple[str, str, int]) -> httpx.HTTPTransport:
        with self._lock:
            pool = self._pools.pop(key, None)
            if pool is None:
                pool = httpx.HTTPTransport(
                    verify=self._verify, retries=0, trust_env=False, socket_options=_NO_DELAY
                )
            self._pools[key] = pool
            while len(self._pools) > _POOLS:
                self._pools.popitem(last=False)[1].close()
            return pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = request.extensions.get(_DEADLINE)
        if not isinstance(deadline, float):
            deadline = self._clock() + self._policy.timeout_seconds
            request.extensions[_DEADLINE] = deadline  # the same dict on the next hop
        try:
            target = check_url(request.url, self._policy)
            address = check_addresses(target, self._resolve(target.host, target.port), self._policy)
        except EgressDenied as exc:
            _log.warning("egress.refused", rule=exc.rule, host=request.url.host)
            raise
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise EgressDenied("too_slow")
        extensions = {k: v for k, v in request.extensions.items() if k != _DEADLINE}
        extensions["timeout"] = dict.fromkeys(("connect", "read", "write", "pool"), remaining)
        if target.scheme == "https":
            extensions["sni_hostname"] = target.host
        headers = request.headers.copy()
        default_port = 443 if target.scheme == "https" else 80
        headers["Host"] = (
            target.host if target.port == default_port else f"{target.host}:{target.port}"
        )
        headers["Accept-Encoding"] = "gzip, deflate"  # what the size limit can bound
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=str(address)),
            headers=headers,  # Host: the checked name, whatever the caller set
            stream=request.stream,
            extensions=extensions,
        )
        pool = self._pool((target.host, str(address), target.port))
        response = self._within(pool, pinned, remaining)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        declared = response.headers.get("content-length", "")
        if encoding not in ("identity", "gzip", "deflate"):
            response.close()
            raise EgressDenied("encoding_unsupported")
        too_large = declared.isdigit() and int(declared) > self._policy.max_response_bytes
        if encoding == "identity" and too_large:
            response.close()
            raise EgressDenied("response_too_large")
        assert isinstance(response.stream, httpx.SyncByteStream)  # noqa: S101 (sync transport)
        response.stream = _Bounded(
            response.stream, self._policy.max_response_bytes, deadline, self._clock, encoding
        )
        if encoding != "identity":  # decoded here: httpx must not decode it again
            del response.headers["content-encoding"]
            response.headers.pop("content-length", None)
        return response

    def _within(
        self, pool: httpx.HTTPTransport, request: httpx.Request, remaining: float
    ) -> httpx.Response:
        """The response's head within the time left: headers sent a byte at a time cannot
        hold the caller past the deadline (the connection is closed under the worker)."""
        future = self._workers.submit(pool.handle_request, request)
        try:
            return future.result(timeout=remaining)
        except FuturesTimeout as exc:
            with self._lock:
                for key, candidate in list(self._pools.items()):
                    if candidate is pool:
                        del self._pools[key]
            pool.close()
            raise EgressDenied("too_slow") from exc

    def close(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()
        self._workers.shutdown(wait=False, cancel_futures=True)


class EgressClient(httpx.Client):
    """httpx's client, whose URL errors (a malformed host, an invalid IDNA label) are the
    guard's refusal like any other, not a library's exception."""

    def build_request(self, *args: Any, **kwargs: Any) -> httpx.Request:
        try:
            return super().build_request(*args, **kwargs)
        except (httpx.InvalidURL, ValueError) as exc:  # IDNAError is a ValueError
            raise EgressDenied("host_invalid") from exc


def egress_client(
    policy: EgressPolicy,
    *,
    resolver: Resolver = resolve,
    verify: Any = True,
    follow_redirects: bool = True,
) -> httpx.Client:
    """The client for outbound calls under `policy`: the egress transport, redirects
    followed (unless told not to) and re-checked up to the policy's limit, no proxy from the
    environment."""
    return EgressClient(
        transport=EgressTransport(policy, resolver=resolver, verify=verify),
        follow_redirects=follow_redirects,
        max_redirects=policy.max_redirects,
        timeout=policy.timeout_seconds,
        trust_env=False,
    )

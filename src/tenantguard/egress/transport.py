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
import time
from collections.abc import Callable, Iterator
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


class _Bounded(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, limit: int, deadline: float) -> None:
        self._inner, self._limit, self._deadline = inner, limit, deadline

    def __iter__(self) -> Iterator[bytes]:
        total = 0
        for chunk in self._inner:
            total += len(chunk)
            if total > self._limit:
                raise EgressDenied("response_too_large")
            if time.monotonic() > self._deadline:
                raise EgressDenied("too_slow")
            yield chunk

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
        self._policy, self._resolve, self._clock = policy, resolver, clock
        self._inner = httpx.HTTPTransport(verify=verify, retries=0, trust_env=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = self._clock() + self._policy.timeout_seconds
        try:
            target = check_url(request.url, self._policy)
            address = check_addresses(target, self._resolve(target.host, target.port), self._policy)
        except EgressDenied as exc:
            _log.warning("egress.refused", rule=exc.rule, host=request.url.host)
            raise
        extensions = dict(request.extensions)
        if target.scheme == "https":
            extensions["sni_hostname"] = target.host
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=str(address)),
            headers=request.headers,  # Host: still the name
            stream=request.stream,
            extensions=extensions,
        )
        response = self._inner.handle_request(pinned)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._policy.max_response_bytes:
            response.close()
            raise EgressDenied("response_too_large")
        assert isinstance(response.stream, httpx.SyncByteStream)  # noqa: S101 (sync transport)
        response.stream = _Bounded(response.stream, self._policy.max_response_bytes, deadline)
        return response

    def close(self) -> None:
        self._inner.close()


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
    return httpx.Client(
        transport=EgressTransport(policy, resolver=resolver, verify=verify),
        follow_redirects=follow_redirects,
        max_redirects=policy.max_redirects,
        timeout=policy.timeout_seconds,
        trust_env=False,
    )

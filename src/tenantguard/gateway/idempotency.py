"""`Idempotency-Key` in the gateway: a middleware that reads the request and keeps the answer,
and the claim the `Authorize` dependency makes once the tenant is known.

    IdempotencyMiddleware   a POST or PATCH with the header: read its body, fingerprint it
                            (`Pending` in the scope), run the app, and keep its answer with
                            the claim before the last byte goes out
    begin(rt, ctx, request) in `Authorize`, after the gate and the rate limit: claim the key for
                            the tenant and principal, or answer from the record (`Replayed`)

Every route that declares an action honours the key, so a new route does too. The public
routes (sign-in steps, inbound webhooks) carry their own one-time credential or id and ignore
the header: there is no tenant to scope a key to before they run. A request that raises out
of the app, or whose answer is too large to keep, leaves its key interrupted: a repeat is told
so, and never runs again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantguard.context import TenantContext
from tenantguard.data import idempotency as store
from tenantguard.errors import TenantGuardError
from tenantguard.gateway.problems import Problem, render
from tenantguard.gateway.runtime import Runtime
from tenantguard.idempotency import (
    HEADER,
    MAX_KEPT_BYTES,
    METHODS,
    REPLAYED_HEADER,
    Pending,
    Stored,
    fingerprint,
    kept_headers,
    parse_key,
)

_log = structlog.get_logger("tenantguard.idempotency")
_PENDING = "idempotency"
_CLAIM = "idempotency_claim"


class Replayed(Exception):
    """Raised by `begin` for a repeat: rendered as the kept answer."""

    def __init__(self, stored: Stored) -> None:
        super().__init__("replayed")
        self.stored = stored


async def replay(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Replayed)  # noqa: S101 (registered for this class)
    response = Response(content=exc.stored.body, status_code=exc.stored.status)
    response.raw_headers = [
        *(h for h in response.raw_headers if h[0] == b"content-length"),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.stored.headers),
        (REPLAYED_HEADER.encode("ascii"), b"true"),
    ]
    return response


@dataclass(frozen=True, slots=True)
class Held:
    """A claim held by a running request, with what finishing it needs."""

    rt: Runtime
    ctx: TenantContext
    claim: store.Claim

    def complete(self, answer: Stored) -> None:
        with self.rt.db.tenant_transaction(self.ctx.tenant_id) as tx:
            if not store.complete(tx, self.ctx, self.rt.keyring, self.claim, answer):
                _log.error("idempotency.claim_lost", key_record=str(self.claim.id))

    def interrupt(self) -> None:
        with self.rt.db.tenant_transaction(self.ctx.tenant_id) as tx:
            store.interrupt(tx, self.claim)

    def release(self) -> None:
        with self.rt.db.tenant_transaction(self.ctx.tenant_id) as tx:
            store.release(tx, self.claim)


def begin(rt: Runtime, ctx: TenantContext, request: Request) -> None:
    """Claim the request's key, if it carries one; raise `Replayed` for a repeat, or the
    problem a reused, running or interrupted key is."""
    state = request.scope.get("state", {})
    pending = state.get(_PENDING)
    if not isinstance(pending, Pending):
        return
    with rt.db.tenant_transaction(ctx.tenant_id) as tx:
        outcome = store.claim(
            tx, ctx, rt.keyring, pending, now=rt.clock.now(), retention=rt.idempotency_retention
        )
    if isinstance(outcome, Stored):
        raise Replayed(outcome)
    state[_CLAIM] = Held(rt, ctx, outcome)


async def _read_all(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The request's messages up to its last body part, and its body (None: it disconnected)."""
    messages: list[Message] = []
    parts: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, b"".join(parts)


class IdempotencyMiddleware:
    """Fingerprint a keyed POST or PATCH, and keep the answer of the request that claimed it.

    Sits inside the body limit, so what it reads is bounded. Knows no tenants: the claim, if
    any, is left in the scope by `begin`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in METHODS:
            await self.app(scope, receive, send)
            return
        values = [v.decode("latin-1") for k, v in scope["headers"] if k == HEADER.encode()]
        try:
            key = parse_key(values)
        except TenantGuardError as bad:
            rid = scope.get("state", {}).get("request_id", "unknown")
            await render(Problem.of(bad), rid=rid, instance=scope["path"])(scope, receive, send)
            return
        if key is None:
            await self.app(scope, receive, send)
            return
        messages, body = await _read_all(receive)
        if body is not None:
            content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
            scope.setdefault("state", {})[_PENDING] = Pending(
                key=key,
                fingerprint=fingerprint(
                    scope["method"],
                    scope["path"],
                    scope["query_string"],
                    content_type,
                    body,
                    headers=scope["headers"],
                ),
                method=scope["method"],
                path=scope["path"],
            )

        async def replayed_receive() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        status = 0
        headers: list[tuple[bytes, bytes]] = []
        kept: list[bytes] = []
        size = 0
        finished = False

        async def keeping(message: Message) -> None:
            nonlocal status, headers, size, finished
            held = scope.get("state", {}).get(_CLAIM)
            if not isinstance(held, Held):
                await send(message)
                return
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                size += len(chunk)
                if size <= MAX_KEPT_BYTES:
                    kept.append(chunk)
                if not message.get("more_body", False):
                    finished = True
                    await _finish(held, status, headers, kept, size)
            await send(message)

        try:
            await self.app(scope, replayed_receive, keeping)
        finally:
            held = scope.get("state", {}).get(_CLAIM)
            if isinstance(held, Held) and not finished:
                await _settle(held.interrupt)


async def _finish(
    held: Held, status: int, headers: list[tuple[bytes, bytes]], kept: list[bytes], size: int
) -> None:
    """Keep the answer before its last byte is sent: a client that saw it and repeats the
    request finds it. Too large to keep: interrupted. A 429 or 5xx: released, not kept."""
    if size > MAX_KEPT_BYTES:
        await _settle(held.interrupt)
        return
    if status == 429 or status >= 500:  # a refusal, rolled back: the retry should run
        await _settle(held.release)
        return
    answer = Stored(status, kept_headers(headers), b"".join(kept))
    await _settle(lambda: held.complete(answer))


async def _settle(finish: Callable[[], None]) -> None:
    """Run a claim's finish off the event loop; a failure is logged (the claim then stays in
    progress until its lease ends, and is interrupted after: never run twice)."""
    try:
        await anyio.to_thread.run_sync(finish)
    except Exception as exc:  # noqa: BLE001 (the answer still goes out; the key fails closed)
        _log.error("idempotency.keep_failed", exc_info=exc)

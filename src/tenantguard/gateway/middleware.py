"""Thin ASGI middleware: request ids (with access logs) and a request body limit.

Each is an adapter in the Starlette style: options in `__init__`, pass through or answer in
`__call__`. Neither knows about tenants.
"""

from __future__ import annotations

import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenantguard.context import accept_request_id
from tenantguard.errors import TenantGuardError
from tenantguard.gateway.problems import Problem, render

_log = structlog.get_logger("tenantguard.access")
HEADER = b"x-request-id"


class RequestIdMiddleware:
    """Accept a well-formed `X-Request-ID` or make one; echo it; bind it to log lines."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = None
        for name, value in scope.get("headers", []):
            if name == HEADER:
                offered = value.decode("latin-1")
                break
        rid = accept_request_id(offered)
        scope.setdefault("state", {})["request_id"] = rid  # in place: outer handlers read it
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != HEADER]
                headers.append((HEADER, rid.encode("ascii")))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=rid):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                # The path only: query strings can carry secrets, and bodies are never logged.
                _log.info(
                    "http.request",
                    method=scope.get("method"),
                    path=scope.get("path"),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )


class PayloadTooLarge(TenantGuardError):
    code = "payload_too_large"
    title = "Payload too large"
    status = 413
    default_detail = "The request body is larger than the gateway accepts."


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` (or a route's own limit in `routes`: artifact
    uploads), declared or streamed, with a 413 problem.

    A declared Content-Length over the limit (or not a number) is answered at once. A body that
    grows past the limit while streaming (chunked, or an understated Content-Length) ends the
    app's view of the request as a disconnect; whatever the app then tries to answer is
    dropped, and the 413 is sent instead. (Raising from `receive` would not do: FastAPI's body
    reader turns any exception into a 400.)
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, routes: dict[tuple[str, str], int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = dict(routes or {})  # (method, exact path) -> its own limit (uploads)

    def limit_of(self, scope: Scope) -> int:
        return self.routes.get((scope.get("method", ""), scope.get("path", "")), self.max_bytes)

    @staticmethod
    def _declared_too_large(scope: Scope, limit: int) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                digits = value.strip()
                return not digits.isdigit() or len(digits) > len(str(limit)) or int(digits) > limit
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope)
        if self._declared_too_large(scope, limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0
        exceeded = False
        started = False

        async def limited() -> Message:
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # the app's answer to a truncated body is replaced by the 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
        rid = scope.get("state", {}).get("request_id", "unknown")
        response = render(Problem.of(PayloadTooLarge), rid=rid, instance=scope["path"])
        await response(scope, receive, send)

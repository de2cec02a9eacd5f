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
    """Refuse request bodies over `max_bytes`, declared or streamed."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                rid = scope.get("state", {}).get("request_id", "unknown")
                response = render(Problem.of(PayloadTooLarge), rid=rid, instance=scope["path"])
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge()
            return message

        await self.app(scope, limited, send)

"""The one problem handler: every error the gateway answers is `application/problem+json`.

RFC 9457 members `type`, `title`, `status`, `detail`, `instance`, plus `request_id` and a
machine `code`. `detail` is always our own safe text: never an exception message, SQL, a
constraint name or the input that failed validation (a 422 lists where and what kind of error,
never the value).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import compile_path

from tenantguard.errors import (
    PROBLEM_TYPE_BASE,
    InternalError,
    MethodNotAllowed,
    NotFound,
    RequestInvalid,
    TenantGuardError,
)
from tenantguard.gateway.runtime import request_id

MEDIA_TYPE = "application/problem+json"
_log = structlog.get_logger("tenantguard.gateway")
_BY_STATUS: dict[int, type[TenantGuardError]] = {404: NotFound, 405: MethodNotAllowed}
_KNOWN_STATUSES = frozenset(s.value for s in HTTPStatus)


@dataclass(frozen=True, slots=True)
class Problem:
    type_uri: str
    title: str
    status: int
    detail: str
    code: str

    @classmethod
    def of(cls, error: TenantGuardError | type[TenantGuardError]) -> Problem:
        """The problem for `error`: an instance, or a class for its default detail."""
        kind = error if isinstance(error, type) else type(error)
        detail = kind.default_detail if isinstance(error, type) else error.detail
        return cls(kind.type_uri(), kind.title, kind.status, detail, kind.code)

    @classmethod
    def for_status(cls, status: int) -> Problem:
        """A framework-raised HTTP error (404 and 405 map onto our own classes)."""
        known = _BY_STATUS.get(status)
        if known is not None:
            return cls.of(known)
        phrase = HTTPStatus(status).phrase if status in _KNOWN_STATUSES else "Error"
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        return cls(PROBLEM_TYPE_BASE + code.replace("_", "-"), phrase, status, f"{phrase}.", code)


def render(
    problem: Problem,
    *,
    rid: str,
    instance: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": problem.type_uri,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
        "request_id": rid,
        "code": problem.code,
        **(extra or {}),
    }
    all_headers = {"X-Request-ID": rid, "Cache-Control": "no-store", **(headers or {})}
    if problem.status == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="tenantguard"'
    return JSONResponse(
        body, status_code=problem.status, media_type=MEDIA_TYPE, headers=all_headers
    )


def allowed_methods(request: Request) -> str:
    """Every method some route serves on the request's path (RFC 9110 `Allow`).

    Starlette's router names only the first matching route's methods; a path served by several
    routes (GET and POST on a collection) needs them all.
    """
    methods: set[str] = set()
    for context in iter_route_contexts(request.app.routes):
        if context.path and compile_path(context.path)[0].fullmatch(request.url.path):
            methods |= set(context.methods or ())
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    """Register the handlers. The only place problem documents are built is `render`."""

    async def on_tenantguard(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TenantGuardError)  # noqa: S101 (registered for this class)
        if exc.status >= 500:
            _log.error(
                "request.failed", code=exc.code, request_id=request_id(request), exc_info=exc
            )
        return render(
            Problem.of(exc), rid=request_id(request), instance=request.url.path, headers=exc.headers
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101
        headers = {"Allow": allowed_methods(request)} if exc.status_code == 405 else None
        return render(
            Problem.for_status(exc.status_code),
            rid=request_id(request),
            instance=request.url.path,
            headers=headers,
        )

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)  # noqa: S101
        errors = [
            {"loc": [str(part) for part in error.get("loc", ())], "type": str(error.get("type"))}
            for error in exc.errors()
        ][:20]
        return render(
            Problem.of(RequestInvalid),
            rid=request_id(request),
            instance=request.url.path,
            extra={"errors": errors},
        )

    async def on_unhandled(request: Request, exc: Exception) -> Response:
        if isinstance(exc, TenantGuardError):  # raised outside the routing layer
            return await on_tenantguard(request, exc)
        # Runs outside the request-id middleware's log context: name the request explicitly.
        _log.error("request.unhandled", request_id=request_id(request), exc_info=exc)
        return render(Problem.of(InternalError), rid=request_id(request), instance=request.url.path)

    app.add_exception_handler(TenantGuardError, on_tenantguard)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unhandled)

"""`/healthz` (the process answers) and `/readyz` (database reachable and doctor clean)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tenantguard.db.doctor import examine
from tenantguard.errors import ServiceUnavailable
from tenantguard.gateway.runtime import runtime

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
def readyz(request: Request) -> JSONResponse:
    with runtime(request).db.system_transaction() as tx:
        report = examine(tx)
    if not report.ok:
        # Findings are for operators (`tenantguard doctor`), not for anonymous callers.
        raise ServiceUnavailable("The database fails tenantguard's safety checks.")
    return JSONResponse({"status": "ready"})

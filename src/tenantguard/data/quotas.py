"""Each tenant's quota policy: the limits its admins set (checked by `quotas.core`), versioned
and audited. The platform's own limits (settings) hold on top; a tenant's can only add."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from tenantguard.audit.store import record_action
from tenantguard.context import TenantContext
from tenantguard.db.pool import Connection
from tenantguard.quotas.core import Limit, parse_limits


def put_policy(
    conn: Connection, ctx: TenantContext, document: Mapping[str, Any], *, now: datetime
) -> int:
    limits = parse_limits(document)
    stored = [limit.as_json() for limit in limits]
    row = conn.execute(
        "INSERT INTO tenantguard.quota_policies (tenant_id, limits, version, updated_at)"
        " VALUES (%s, %s, 1, %s) ON CONFLICT (tenant_id) DO UPDATE SET limits = EXCLUDED.limits,"
        " version = tenantguard.quota_policies.version + 1, updated_at = EXCLUDED.updated_at"
        " RETURNING version",
        (ctx.tenant_id, Jsonb(stored), now),
    ).fetchone()
    version = int(row[0]) if row else 0
    record_action(
        conn,
        ctx,
        action="quota_policy.put",
        target_type="tenant",
        target_id=str(ctx.tenant_id),
        now=now,
        payload={"version": version, "limits": stored},
    )
    return version


def get_policy(conn: Connection, tenant_id: UUID) -> tuple[tuple[Limit, ...], int]:
    """The tenant's own limits and their version (none and 0 until it sets some)."""
    row = conn.execute(
        "SELECT limits, version FROM tenantguard.quota_policies WHERE tenant_id = %s",
        (tenant_id,),
    ).fetchone()
    if row is None:
        return (), 0
    return parse_limits({"limits": row[0]}), int(row[1])

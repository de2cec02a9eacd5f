"""Each tenant's egress, in its transaction: the host lists its admins set, and grants of
private networks that only the platform's operator issues (from the host, `tenantguard egress
grant`), with a reason, revocable, each audited in the tenant's chain.

`policy_for` is what a tenant's outbound calls run under: the platform's base policy, the
tenant's allow list (if it has one), the base's and the tenant's deny lists, and the base's
grants with the tenant's active ones. A tenant's lists can only narrow: nothing a tenant sets
reaches an address the guard refuses, and a grant never covers metadata.

Threat stopped: a tenant (or a run of it) reaching a private network nobody granted it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID, uuid4

from psycopg.types.json import Jsonb

from tenantguard.audit.store import record_action
from tenantguard.context import TenantContext
from tenantguard.db.pool import Connection
from tenantguard.egress.check import EgressGrant, EgressPolicy, host_pattern
from tenantguard.errors import NotFound, RequestInvalid

MAX_HOSTS = 500


@dataclass(frozen=True, slots=True)
class Grant:
    id: UUID
    network: str
    ports: list[int]
    reason: str
    granted_by: str
    granted_at: datetime
    revoked_at: datetime | None


def _hosts(values: Iterable[str]) -> list[str]:
    chosen = list(values)
    if len(chosen) > MAX_HOSTS:
        raise RequestInvalid("Too many hosts in one list.")
    try:
        return sorted({host_pattern(v) for v in chosen})
    except ValueError as exc:
        raise RequestInvalid("A host list names something that is not a host name.") from exc


def put_policy(
    conn: Connection,
    ctx: TenantContext,
    *,
    allow_hosts: Iterable[str],
    deny_hosts: Iterable[str],
    now: datetime,
) -> int:
    allow, deny = _hosts(allow_hosts), _hosts(deny_hosts)
    row = conn.execute(
        "INSERT INTO tenantguard.egress_policies (tenant_id, allow_hosts, deny_hosts, version,"
        " updated_at) VALUES (%s, %s, %s, 1, %s) ON CONFLICT (tenant_id) DO UPDATE SET"
        " allow_hosts = EXCLUDED.allow_hosts, deny_hosts = EXCLUDED.deny_hosts,"
        " version = tenantguard.egress_policies.version + 1, updated_at = EXCLUDED.updated_at"
        " RETURNING version",
        (ctx.tenant_id, Jsonb(allow), Jsonb(deny), now),
    ).fetchone()
    version = int(row[0]) if row else 0
    record_action(
        conn,
        ctx,
        action="egress.policy",
        target_type="tenant",
        target_id=str(ctx.tenant_id),
        now=now,
        payload={"version": version, "allow_hosts": allow, "deny_hosts": deny},
    )
    return version


def get_policy(conn: Connection, tenant_id: UUID) -> tuple[list[str], list[str], int]:
    row = conn.execute(
        "SELECT allow_hosts, deny_hosts, version FROM tenantguard.egress_policies"
        " WHERE tenant_id = %s",
        (tenant_id,),
    ).fetchone()
    return (list(row[0]), list(row[1]), int(row[2])) if row else ([], [], 0)


def add_grant(
    conn: Connection,
    ctx: TenantContext,
    *,
    network: str,
    ports: Iterable[int],
    reason: str,
    granted_by: str,
    now: datetime,
) -> Grant:
    """A grant of `network` on `ports` to the tenant (checked: no metadata, no IPv4-in-IPv6
    forms, ports named)."""
    chosen = sorted(set(ports))
    try:
        checked = EgressGrant.of(network, chosen)
    except ValueError as exc:
        raise RequestInvalid(f"The grant is refused: {exc}.") from exc
    if not reason.strip() or len(reason) > 500:
        raise RequestInvalid("A grant has a reason.")
    row = conn.execute(
        "INSERT INTO tenantguard.egress_grants (tenant_id, id, network, ports, reason,"
        " granted_by, granted_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " RETURNING id, network, ports, reason, granted_by, granted_at, revoked_at",
        (ctx.tenant_id, uuid4(), str(checked.network), chosen, reason, granted_by, now),
    ).fetchone()
    assert row is not None  # noqa: S101 (an insert returns its row)
    grant = Grant(*row)
    record_action(
        conn,
        ctx,
        action="egress.grant",
        target_type="egress_grant",
        target_id=str(grant.id),
        now=now,
        reason=reason,
        payload={"network": grant.network, "ports": chosen, "granted_by": granted_by},
    )
    return grant


def revoke_grant(conn: Connection, ctx: TenantContext, grant_id: UUID, *, now: datetime) -> None:
    row = conn.execute(
        "UPDATE tenantguard.egress_grants SET revoked_at = %s WHERE tenant_id = %s AND id = %s"
        " AND revoked_at IS NULL RETURNING id",
        (now, ctx.tenant_id, grant_id),
    ).fetchone()
    if row is None:
        raise NotFound()
    record_action(
        conn,
        ctx,
        action="egress.revoke",
        target_type="egress_grant",
        target_id=str(grant_id),
        now=now,
    )


def list_grants(conn: Connection, tenant_id: UUID) -> list[Grant]:
    rows = conn.execute(
        "SELECT id, network, ports, reason, granted_by, granted_at, revoked_at"
        " FROM tenantguard.egress_grants WHERE tenant_id = %s ORDER BY granted_at, id",
        (tenant_id,),
    ).fetchall()
    return [Grant(*r) for r in rows]


def policy_for(conn: Connection, tenant_id: UUID, base: EgressPolicy) -> EgressPolicy:
    """What the tenant's outbound calls run under (see the module doc). The base has no
    allow list of its own (the tenant's would replace it, which could only narrow nothing)."""
    if base.allow_hosts:
        raise ValueError("the platform's base egress policy has no allow list")
    # The policy and the live grants in one round trip (this is on every model call).
    row = conn.execute(
        "SELECT p.allow_hosts, p.deny_hosts, (SELECT coalesce(json_agg(json_build_array("
        "g.network::text, g.ports) ORDER BY g.granted_at, g.id), '[]'::json)"
        " FROM tenantguard.egress_grants g WHERE g.tenant_id = %s AND g.revoked_at IS NULL)"
        " FROM (VALUES (1)) AS one (x)"
        " LEFT JOIN tenantguard.egress_policies p ON p.tenant_id = %s",
        (tenant_id, tenant_id),
    ).fetchone()
    assert row is not None  # noqa: S101 (one row, always)
    allow, deny = list(row[0] or []), list(row[1] or [])
    grants = [
        EgressGrant(ipaddress.ip_network(network), frozenset(ports)) for network, ports in row[2]
    ]
    return replace(
        base,
        allow_hosts=tuple(allow),
        deny_hosts=(*base.deny_hosts, *deny),
        grants=(*base.grants, *grants),
    )

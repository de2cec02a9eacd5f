"""Creating a tenant, with its first (admin) API key, in one audited transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from tenantguard.audit.store import AuditRecord, append
from tenantguard.authz import ADMIN_CAPABILITIES
from tenantguard.context import Principal
from tenantguard.db.pool import Database
from tenantguard.errors import RequestInvalid
from tenantguard.identity.keystore import IssuedKey, insert_key


@dataclass(frozen=True, slots=True)
class NewTenant:
    tenant_id: UUID
    name: str
    admin_key: IssuedKey


def create_tenant(
    db: Database, *, name: str, actor: Principal, request_id: str, now: datetime
) -> NewTenant:
    """Create a tenant and its admin key. The key's secret is in the result, and nowhere else."""
    name = name.strip()
    if not 1 <= len(name) <= 200 or not name.isprintable():
        raise RequestInvalid("A tenant name is 1 to 200 printable characters.")
    tenant_id = uuid4()
    with db.tenant_transaction(tenant_id) as tx:
        tx.execute(
            "INSERT INTO tenantguard.tenants (tenant_id, name, created_at) VALUES (%s, %s, %s)",
            (tenant_id, name, now),
        )
        issued = insert_key(
            tx, tenant_id=tenant_id, name="admin", capabilities=ADMIN_CAPABILITIES, now=now
        )
        for action, target_type, target_id, payload in (
            ("tenant.create", "tenant", str(tenant_id), {"name": name}),
            (
                "api_key.create",
                "api_key",
                str(issued.info.id),
                {"name": "admin", "capabilities": sorted(ADMIN_CAPABILITIES)},
            ),
        ):
            append(
                tx,
                tenant_id=tenant_id,
                request_id=request_id,
                now=now,
                record=AuditRecord(
                    action=action,
                    outcome="success",
                    actor=actor,
                    target_type=target_type,
                    target_id=target_id,
                    payload=payload,
                ),
            )
    return NewTenant(tenant_id, name, issued)


def tenant_ids(db: Database) -> list[UUID]:
    """Every tenant, the platform realm included, for platform jobs (rewrap, rotation)."""
    with db.system_transaction() as tx:
        rows = tx.execute("SELECT tenant_id FROM tenantguard.tenant_ids()").fetchall()
    return [row[0] for row in rows]

"""Every bytea column is either a registered sealed column or declared not sealed, with a
reason: a new column cannot silently hold plaintext secrets, or miss re-encryption."""

from __future__ import annotations

from collections.abc import Callable

from tenantguard.context import Principal, TenantContext
from tenantguard.crypto.fields import reencrypt
from tenantguard.crypto.keyring import Keyring
from tenantguard.data import secrets, webhook_endpoints, webhook_sources
from tenantguard.data.columns import ENCRYPTED_COLUMNS, NOT_SEALED
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.egress.check import EgressPolicy
from tenantguard.testing import FakeClock
from tenantguard.webhooks.signing import Verified


def test_every_bytea_column_is_accounted_for(db: Database) -> None:
    with db.system_transaction() as tx:
        rows = tx.execute(
            "SELECT table_name || '.' || column_name FROM information_schema.columns"
            " WHERE table_schema = 'tenantguard' AND data_type = 'bytea' ORDER BY 1"
        ).fetchall()
    found = {str(r[0]) for r in rows}
    sealed = {f"{c.table}.{c.column}" for c in ENCRYPTED_COLUMNS}
    assert found == sealed | set(NOT_SEALED)
    assert not sealed & set(NOT_SEALED)


def test_every_sealed_column_can_be_re_sealed_by_the_service(
    db: Database, keyring: Keyring, clock: FakeClock, make_tenant: Callable[[str], NewTenant]
) -> None:
    """After a rotation, re-encryption rewrites each registered column in place as the
    service: a tenant with a row in each of the webhook tables gets every one re-sealed."""
    tenant = make_tenant("reseal")
    ctx = TenantContext(tenant.tenant_id, Principal("system", "tests"), frozenset(), "reseal")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        secrets.write(tx, ctx, keyring, "token", b"whsec_x", now=clock.now())
        source = webhook_sources.put(
            tx, ctx, "s", scheme="stripe", secret_name="token", now=clock.now()
        )
        webhook_sources.keep(
            tx, ctx, keyring, source, verified=Verified("r", 0), body=b"{}", now=clock.now()
        )
        endpoint, _ = webhook_endpoints.create(
            tx,
            ctx,
            keyring,
            url="https://hooks.example/x",
            event_types=["webhook.test"],
            description="",
            policy=EgressPolicy(),
            now=clock.now(),
        )
        webhook_endpoints.emit(
            tx, ctx, keyring, "webhook.test", {}, now=clock.now(), endpoint_id=endpoint.id
        )
        keyring.rotate(tx, ctx)
    for column in ENCRYPTED_COLUMNS:
        result = reencrypt(db, keyring, ctx, column, clock=clock)
        webhook_columns = (
            webhook_sources.RECEIPT_BODY,
            webhook_endpoints.ENDPOINT_SECRET,
            webhook_endpoints.DELIVERY_BODY,
        )
        if column in webhook_columns:
            assert result.reencrypted == 1, column.purpose

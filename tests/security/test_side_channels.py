"""The foreign-key and unique-key side channels, and sequences: closed by construction."""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import NotFound

SHARED_TABLES = """
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'tenantguard' AND c.relkind IN ('r', 'p')
      AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                  AND a.attname = 'tenant_id' AND NOT a.attisdropped)
"""


def test_foreign_keys_between_tenant_tables_are_composite(db: Database) -> None:
    """Every FK from a tenant table carries tenant_id to tenant_id (a plain FK check bypasses
    RLS and would reveal another tenant's row)."""
    with db.system_transaction() as tx:
        rows = tx.execute(
            f"""
            SELECT con.conname,
                   (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(con.conkey)
                      WITH ORDINALITY k(num, ord)
                      JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num),
                   (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(con.confkey)
                      WITH ORDINALITY k(num, ord)
                      JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num)
            FROM pg_constraint con
            WHERE con.contype = 'f' AND con.conrelid IN ({SHARED_TABLES})
            """
        ).fetchall()
    assert len(rows) >= 6
    for name, local, remote in rows:
        assert isinstance(local, list), name
        assert isinstance(remote, list), name
        pairs = list(zip(local, remote, strict=True))
        assert ("tenant_id", "tenant_id") in pairs, name


def test_unique_keys_on_tenant_tables_include_tenant_id(db: Database) -> None:
    """A global unique key would tell a tenant that another tenant holds a value."""
    with db.system_transaction() as tx:
        rows = tx.execute(
            f"""
            SELECT i.indexrelid::regclass::text,
                   EXISTS (SELECT 1 FROM unnest(i.indkey) k(num)
                           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num
                           WHERE a.attname = 'tenant_id')
            FROM pg_index i WHERE i.indisunique AND i.indrelid IN ({SHARED_TABLES})
            """
        ).fetchall()
    assert len(rows) >= 7
    for index, has_tenant in rows:
        assert has_tenant, index


def test_no_sequences_in_the_schema(db: Database) -> None:
    """Ids are random; no sequence counts tenants' rows for anyone to observe."""
    with db.system_transaction() as tx:
        found = tx.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'S' AND n.nspname = 'tenantguard'"
        ).fetchone()
    assert found == (0,)


def test_pointing_at_another_tenants_row_looks_like_pointing_at_nothing(
    db: Database, client: TestClient, make_tenant: Callable[[str], NewTenant]
) -> None:
    """An event for A's run, written in B's context, fails exactly like one for no run."""
    a, b = make_tenant("A"), make_tenant("B")
    run = client.post(
        "/api/runs", json={"agent": "x"}, headers={"Authorization": f"Bearer {a.admin_key.secret}"}
    ).json()
    insert = (
        "INSERT INTO tenantguard.run_events (tenant_id, run_id, seq, id, type, data,"
        " created_at) VALUES (%s, %s, 1, %s, 't', '{}', now())"
    )
    outcomes = []
    for target in (run["id"], str(uuid4())):
        with pytest.raises(NotFound) as caught, db.tenant_transaction(b.tenant_id) as tx:
            tx.execute(insert, (b.tenant_id, target, uuid4()))
        outcomes.append((type(caught.value.__cause__), caught.value.detail))
    assert outcomes[0] == outcomes[1]


def test_same_unique_value_in_two_tenants_does_not_collide(
    client: TestClient, make_tenant: Callable[[str], NewTenant]
) -> None:
    """B can use the memory key A uses: no collision, so no existence oracle."""
    a, b = make_tenant("A"), make_tenant("B")
    for tenant in (a, b):
        created = client.post(
            "/api/memory",
            json={"key": "shared-key", "content": "x"},
            headers={"Authorization": f"Bearer {tenant.admin_key.secret}"},
        )
        assert created.status_code == 201

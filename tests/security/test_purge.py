"""Purging a tenant: after it nothing of the tenant is readable or there (rows in every tenant
table, found by enumeration; artifacts' objects; files; data keys), its credentials are dead,
another tenant is untouched, the platform chain keeps a tombstone, and a purge interrupted
half-way completes on a re-run."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.db import Database
from tenantguard.purge import Purger, tenant_directory
from tenantguard.testing import TestDatabase
from tests.security.conftest import World
from tests.support import bearer

OPERATOR = TenantContext(PLATFORM_TENANT_ID, Principal("system", "tests"), frozenset(), "purge")


def _purger(client: TestClient) -> Purger:
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    return Purger(rt.db, rt.keyring, rt.artifacts.store, rt.data_root, rt.clock)


def _rows(owner_in: Callable[[UUID], Any], tenant: UUID) -> dict[str, int]:
    conn = owner_in(tenant)
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'"
            " WHERE c.relkind = 'r' AND n.nspname = 'tenantguard' ORDER BY 1"
        ).fetchall()
    ]
    counts = {}
    for table in tables:
        (n,) = conn.execute(
            f"SELECT count(*) FROM tenantguard.{table} WHERE tenant_id = %s", (tenant,)
        ).fetchone()
        if n:
            counts[str(table)] = int(n)
    return counts


def _populate(client: TestClient, world: World) -> None:
    """What the security world has, plus a file in the workspace and a kept answer."""
    h = World.headers(world.a)
    keyed = {**h, "Idempotency-Key": "before-purge"}
    assert client.post("/api/memory", json={"key": "k2", "content": "x"}, headers=keyed).is_success
    workspace = tenant_directory(client.app.state.runtime.data_root, world.a.tenant_id)  # type: ignore[attr-defined]
    (workspace / "workspace").mkdir(parents=True, exist_ok=True)
    (workspace / "workspace" / "notes.txt").write_text(world.marker)


def test_a_purge_leaves_nothing_and_keeps_a_tombstone(
    client: TestClient, world: World, owner_in: Callable[[UUID], Any], db: Database
) -> None:
    _populate(client, world)
    a, b = world.a.tenant_id, world.b.tenant_id
    before_a, before_b = _rows(owner_in, a), _rows(owner_in, b)
    assert {"memory_entries", "artifacts", "audit_events", "data_keys", "idempotency_keys"} <= set(
        before_a
    )
    report = _purger(client).purge(OPERATOR, a)
    assert report.verified
    assert _rows(owner_in, a) == {}  # every tenant table, by enumeration, as the owner sees it
    assert _rows(owner_in, b) == before_b  # the other tenant is untouched
    assert report.rows.keys() == before_a.keys()
    assert not tenant_directory(client.app.state.runtime.data_root, a).exists()  # type: ignore[attr-defined]
    store = client.app.state.runtime.artifacts.store  # type: ignore[attr-defined]
    assert store.keys(f"orgs/{a}/artifacts/") == []
    # Dead credentials: the admin key is gone (answers like any unknown key).
    assert client.get("/api/memory", headers=World.headers(world.a)).status_code == 401
    assert client.get("/api/memory", headers=World.headers(world.b)).status_code == 200
    # The tombstone, in the platform chain: what went, and the chain head as it was.
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        events = [e for e in iter_events(tx, tenant_id=PLATFORM_TENANT_ID) if e.target_id == str(a)]
    assert [e.action for e in events] == ["tenant.purge_started", "tenant.purged"]
    tombstone = json.loads(events[-1].payload)
    # The chain as it was, and the shred's own event, which went with it.
    assert tombstone["rows"]["audit_events"] == before_a["audit_events"] + 1
    assert tombstone["audit_head"]["seq"] == before_a["audit_events"] - 1
    # A second purge finds it done and does nothing.
    assert _purger(client).purge(OPERATOR, a).already_done


def test_a_purge_interrupted_half_way_completes_on_a_re_run(
    client: TestClient,
    world: World,
    owner_in: Callable[[UUID], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = world.a.tenant_id
    h = World.headers(world.a)
    for i in range(3):
        made = client.post("/api/artifacts", params={"name": f"f{i}"}, content=b"x", headers=h)
        assert made.status_code == 201
    purger = _purger(client)
    real_delete = purger.store.delete
    calls: list[str] = []

    def dies_on_the_second(key: str) -> None:
        calls.append(key)
        if len(calls) == 2:
            raise OSError("the process was killed")
        real_delete(key)

    monkeypatch.setattr(purger.store, "delete", dies_on_the_second)
    with pytest.raises(OSError, match="killed"):
        purger.purge(OPERATOR, a)
    # Half-way: keys destroyed (nothing opens), one object gone, the rows still there.
    left = purger.check(a)
    assert left["objects"] == 3  # 4 artifacts, one deleted
    assert left["data_keys"] > 0  # destroyed, not yet deleted
    monkeypatch.setattr(purger.store, "delete", real_delete)
    report = purger.purge(OPERATOR, a)
    assert report.verified
    assert report.objects == 3
    assert _rows(owner_in, a) == {}
    assert purger.check(a) == {}


def test_the_row_purge_refuses_unless_recorded_shredded_and_in_context(
    client: TestClient, world: World, pg: TestDatabase
) -> None:
    """The definer deletes nothing from another tenant's context, nothing of the platform
    realm, nothing for a tenant whose purge is not recorded or whose keys still open."""
    a, b = world.a.tenant_id, world.b.tenant_id

    def refusal(tenant: UUID, context: UUID) -> str:
        with psycopg.connect(pg.app_url.get_secret_value()) as conn:
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(context),))
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
                conn.execute("SELECT * FROM tenantguard.purge_tenant_rows(%s)", (tenant,))
            return str(refused.value)

    assert "own context" in refusal(a, b)
    assert "platform realm" in refusal(PLATFORM_TENANT_ID, PLATFORM_TENANT_ID)
    assert "destroyed first" in refusal(a, a)
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    ctx = TenantContext(a, Principal("system", "tests"), frozenset(), "t")
    with rt.db.tenant_transaction(a) as tx:
        rt.keyring.destroy_all(tx, ctx)
    assert "no purge of this tenant is recorded" in refusal(a, a)
    with rt.db.tenant_transaction(a) as tx:
        assert tx.execute("SELECT count(*) FROM tenantguard.memory_entries").fetchone() == (1,)


def test_the_audit_log_stays_append_only_outside_a_purge(
    world: World, owner_in: Callable[[UUID], Any]
) -> None:
    conn = owner_in(world.a.tenant_id)
    with pytest.raises(Exception, match="append-only"):
        conn.execute(
            "DELETE FROM tenantguard.audit_events WHERE tenant_id = %s", (world.a.tenant_id,)
        )
    conn.execute("SELECT set_config('tenantguard.purging', %s, false)", (str(world.a.tenant_id),))
    with pytest.raises(Exception, match="append-only"):  # the owner, even with the setting
        conn.execute(
            "DELETE FROM tenantguard.audit_events WHERE tenant_id = %s", (world.a.tenant_id,)
        )


def test_an_unknown_tenant_is_not_found(client: TestClient) -> None:
    from uuid import uuid4  # noqa: PLC0415

    from tenantguard.errors import NotFound  # noqa: PLC0415

    with pytest.raises(NotFound):
        _purger(client).purge(OPERATOR, uuid4())


def test_operators_purge_through_the_api_with_a_fresh_second_factor(
    client: TestClient,
    world: World,
    owner_in: Callable[[UUID], Any],
    sign_in_operator: Callable[..., Any],
    db: Database,
) -> None:
    a = world.a.tenant_id
    url = f"/api/operator/tenants/{a}/purge"
    _, without_mfa = sign_in_operator(amr=("email",))
    stale = client.post(url, json={"confirm": str(a)}, headers=bearer(without_mfa.access_token))
    assert stale.status_code in (401, 403), stale.text
    tenant_admin = client.post(url, json={"confirm": str(a)}, headers=World.headers(world.a))
    assert tenant_admin.status_code == 403  # a tenant credential never holds a platform action
    _, operator = sign_in_operator()
    h = bearer(operator.access_token)
    mismatch = client.post(url, json={"confirm": str(world.b.tenant_id)}, headers=h)
    assert mismatch.status_code == 422
    assert _rows(owner_in, a) != {}
    purged = client.post(url, json={"confirm": str(a)}, headers=h)
    assert purged.status_code == 200, purged.text
    assert purged.json()["verified"] is True
    assert _rows(owner_in, a) == {}
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        (event,) = [
            e
            for e in iter_events(tx, tenant_id=PLATFORM_TENANT_ID)
            if e.action == "tenant.purged" and e.target_id == str(a)
        ]
    assert event.actor_type == "user"  # an operator: a person of the platform realm

"""Memory entries over the gateway: versions, soft delete, restore, concurrency, paging."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tenantguard.data.tenants import NewTenant

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]


def test_lifecycle_keeps_every_version(client: TestClient, as_tenant: AsTenant) -> None:
    """Create, update, delete and restore each add a version; content history is kept."""
    _, h = as_tenant("acme")
    entry = client.post("/api/memory", json={"key": "k", "content": "one"}, headers=h).json()
    eid = entry["id"]
    assert client.patch(f"/api/memory/{eid}", json={"content": "two"}, headers=h).status_code == 200
    assert client.delete(f"/api/memory/{eid}", headers=h).status_code == 204
    assert client.get(f"/api/memory/{eid}", headers=h).status_code == 404
    deleted = client.get(f"/api/memory/{eid}?include_deleted=true", headers=h).json()
    assert deleted["deleted_at"] is not None
    assert client.get("/api/memory", headers=h).json()["items"] == []
    restored = client.post(f"/api/memory/{eid}/restore", headers=h)
    assert restored.status_code == 200
    assert restored.json()["content"] == "two"
    assert restored.json()["version"] == 4
    versions = client.get(f"/api/memory/{eid}/versions", headers=h).json()
    assert [(v["version"], v["change"], v["content"]) for v in versions] == [
        (1, "created", "one"),
        (2, "updated", "two"),
        (3, "deleted", "two"),
        (4, "restored", "two"),
    ]


def test_stale_version_conflicts(client: TestClient, as_tenant: AsTenant) -> None:
    """An update naming an old version is refused with 409, and changes nothing."""
    _, h = as_tenant("acme")
    eid = client.post("/api/memory", json={"key": "k", "content": "a"}, headers=h).json()["id"]
    client.patch(f"/api/memory/{eid}", json={"content": "b", "expected_version": 1}, headers=h)
    stale = client.patch(
        f"/api/memory/{eid}", json={"content": "c", "expected_version": 1}, headers=h
    )
    assert stale.status_code == 409
    assert stale.json()["code"] == "conflict"
    assert client.get(f"/api/memory/{eid}", headers=h).json()["content"] == "b"


def test_live_keys_are_unique_per_tenant(client: TestClient, as_tenant: AsTenant) -> None:
    """A second live entry with the same key is a 409; after deletion the key is free."""
    _, h = as_tenant("acme")
    first = client.post("/api/memory", json={"key": "same", "content": "1"}, headers=h)
    again = client.post("/api/memory", json={"key": "same", "content": "2"}, headers=h)
    assert again.status_code == 409
    assert "memory_entries" not in again.text  # no constraint name leaks
    client.delete(f"/api/memory/{first.json()['id']}", headers=h)
    assert (
        client.post("/api/memory", json={"key": "same", "content": "3"}, headers=h).status_code
        == 201
    )
    restore = client.post(f"/api/memory/{first.json()['id']}/restore", headers=h)
    assert restore.status_code == 409


def test_restore_of_live_entry_conflicts(client: TestClient, as_tenant: AsTenant) -> None:
    _, h = as_tenant("acme")
    eid = client.post("/api/memory", json={"key": "k", "content": "a"}, headers=h).json()["id"]
    assert client.post(f"/api/memory/{eid}/restore", headers=h).status_code == 409


def test_pages_cover_every_entry_once(client: TestClient, as_tenant: AsTenant) -> None:
    """Keyset pages with a cursor return each entry exactly once."""
    _, h = as_tenant("acme")
    made = {
        client.post("/api/memory", json={"key": f"k{i}", "content": "x"}, headers=h).json()["id"]
        for i in range(7)
    }
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/memory", params=params, headers=h).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made)
    bad = client.get("/api/memory", params={"cursor": "not-a-cursor"}, headers=h)
    assert bad.status_code == 422


def test_empty_patch_is_refused(client: TestClient, as_tenant: AsTenant) -> None:
    """A patch that changes nothing is a 422, not a silent new version."""
    _, h = as_tenant("acme")
    eid = client.post("/api/memory", json={"key": "k", "content": "a"}, headers=h).json()["id"]
    refused = client.patch(f"/api/memory/{eid}", json={"expected_version": 1}, headers=h)
    assert refused.status_code == 422
    assert client.get(f"/api/memory/{eid}", headers=h).json()["version"] == 1

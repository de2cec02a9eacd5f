"""Artifacts through the gateway, on both stores: private by default, sealed at rest, listed
through the API, downloaded only through signed URLs that are tenant-scoped, bound to one
artifact and expire (5 minutes by default); expired, other tenant, other artifact and tampered
links are all refused."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events
from tenantguard.context import Principal, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.gateway import create_app
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock
from tests.artifacts.conftest import S3Server

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
BODY = b"%PDF-1.7 quarterly report: only-in-this-artifact"


@pytest.fixture(params=["local", "s3"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(
    store_kind: str,
    request: pytest.FixtureRequest,
    settings: Settings,
    db: Database,
    clock: FakeClock,
    keyring: Keyring,
) -> Iterator[TestClient]:
    if store_kind == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        settings = server.settings(settings, request.getfixturevalue("bucket"))
    app = create_app(settings, database=db, clock=clock, keyring=keyring)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _upload(client: TestClient, h: dict[str, str], name: str = "report.pdf") -> dict[str, Any]:
    made = client.post(
        "/api/artifacts",
        params={"name": name},
        content=BODY,
        headers={**h, "Content-Type": "application/pdf"},
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


def _url(client: TestClient, h: dict[str, str], artifact: dict[str, Any], **body: Any) -> str:
    issued = client.post(f"/api/artifacts/{artifact['id']}/url", json=body, headers=h)
    assert issued.status_code == 200, issued.text
    return str(issued.json()["url"])


def test_upload_list_read_and_download(
    client: TestClient, as_tenant: AsTenant, db: Database
) -> None:
    tenant, h = as_tenant("t")
    made = _upload(client, h)
    assert made["size"] == len(BODY)
    assert made["sha256"] == hashlib.sha256(BODY).hexdigest()
    assert made["content_type"] == "application/pdf"
    listed = client.get("/api/artifacts", headers=h).json()
    assert [a["id"] for a in listed["items"]] == [made["id"]]
    assert client.get(f"/api/artifacts/{made['id']}", headers=h).json() == made
    url = _url(client, h, made)
    got = client.get(url)  # no Authorization: the link is the credential
    assert got.status_code == 200, got.text
    assert got.content == BODY
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["content-disposition"] == "attachment; filename*=UTF-8''report.pdf"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in got.headers["content-security-policy"]
    with db.tenant_transaction(tenant.tenant_id) as tx:
        actions = [e.action for e in iter_events(tx, tenant_id=tenant.tenant_id)]
    assert {"artifact.upload", "artifact.url", "artifact.download"} <= set(actions)


def test_nothing_is_public_and_nothing_is_stored_in_the_clear(
    client: TestClient, as_tenant: AsTenant
) -> None:
    _, h = as_tenant("t")
    made = _upload(client, h)
    path = urlsplit(_url(client, h, made)).path
    assert client.get(path).status_code == 422  # no token: no download at all
    assert client.get(f"/api/artifacts/{made['id']}").status_code == 401
    store = client.app.state.runtime.artifacts.store  # type: ignore[attr-defined]
    tenant_id = path.split("/")[3]
    (stored_key,) = store.keys(f"orgs/{tenant_id}/artifacts/")
    sealed = store.get(stored_key)
    assert b"only-in-this-artifact" not in sealed
    assert stored_key == f"orgs/{tenant_id}/artifacts/{made['id']}"


def test_expired_other_tenant_other_artifact_and_tampered_links_are_refused(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    a, ha = as_tenant("a")
    b, hb = as_tenant("b")
    mine, also_mine = _upload(client, ha), _upload(client, ha, "other.pdf")
    theirs = _upload(client, hb)
    url = _url(client, ha, mine)
    path, query = urlsplit(url).path, parse_qs(urlsplit(url).query)
    token = query["token"][0]

    def code(p: str, t: str) -> tuple[int, str]:
        answer = client.get(p, params={"token": t})
        return answer.status_code, answer.json().get("code", "")

    invalid = (403, "signed_url_invalid")
    # Another tenant: A's token on B's path (B's own artifact id), and on A's id under B.
    assert code(f"/api/artifact-downloads/{b.tenant_id}/{theirs['id']}", token) == invalid
    assert code(f"/api/artifact-downloads/{b.tenant_id}/{mine['id']}", token) == invalid
    # Another artifact of the same tenant.
    assert code(f"/api/artifact-downloads/{a.tenant_id}/{also_mine['id']}", token) == invalid
    # Tampered: every character changed in turn is refused (sampled), and so is a token in
    # another spelling of the same bytes.
    for i in range(0, len(token), 7):
        flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        assert code(path, flipped) == invalid, i
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert code(path, base64.urlsafe_b64encode(raw).decode()) == invalid or token.endswith("=")
    assert code(path, token + "A") == invalid
    assert code(path, "!!") == invalid
    # Live, then expired after the default 5 minutes.
    assert client.get(url).status_code == 200
    clock.advance(timedelta(seconds=300))
    assert code(path, token) == (403, "signed_url_expired")


def test_url_lifetimes(client: TestClient, as_tenant: AsTenant, clock: FakeClock) -> None:
    _, h = as_tenant("t")
    made = _upload(client, h)
    long = _url(client, h, made, expires_in=3600)  # the deployment's maximum
    too_long = client.post(f"/api/artifacts/{made['id']}/url", json={"expires_in": 3601}, headers=h)
    assert too_long.status_code == 422
    clock.advance(timedelta(seconds=3599))
    assert client.get(long).status_code == 200
    clock.advance(timedelta(seconds=1))
    assert client.get(long).status_code == 403


def test_a_deleted_artifact_is_gone_from_the_store_and_its_links(
    client: TestClient, as_tenant: AsTenant
) -> None:
    _, h = as_tenant("t")
    made = _upload(client, h)
    url = _url(client, h, made)
    assert client.delete(f"/api/artifacts/{made['id']}", headers=h).status_code == 204
    assert client.get(url).status_code == 404
    assert client.get(f"/api/artifacts/{made['id']}", headers=h).status_code == 404
    store = client.app.state.runtime.artifacts.store  # type: ignore[attr-defined]
    tenant_id = urlsplit(url).path.split("/")[3]
    assert store.keys(f"orgs/{tenant_id}/artifacts/") == []


def test_shredded_keys_kill_every_link(
    client: TestClient, as_tenant: AsTenant, db: Database, keyring: Keyring
) -> None:
    tenant, h = as_tenant("t")
    url = _url(client, h, _upload(client, h))
    ctx = TenantContext(tenant.tenant_id, Principal("system", "tests"), frozenset(), "t")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        keyring.destroy_all(tx, ctx)
    answer = client.get(url)
    assert answer.status_code == 403
    assert answer.json()["code"] == "signed_url_invalid"


def test_a_name_is_a_label_never_a_path(client: TestClient, as_tenant: AsTenant) -> None:
    _, h = as_tenant("t")
    made = _upload(client, h, "../../../etc/passwd")
    store = client.app.state.runtime.artifacts.store  # type: ignore[attr-defined]
    url = _url(client, h, made)
    tenant_id = urlsplit(url).path.split("/")[3]
    assert store.keys(f"orgs/{tenant_id}/artifacts/") == [
        f"orgs/{tenant_id}/artifacts/{made['id']}"
    ]
    got = client.get(url)
    assert got.headers["content-disposition"] == (
        "attachment; filename*=UTF-8''..%2F..%2F..%2Fetc%2Fpasswd"
    )
    for bad in ("", "a\nb", "x" * 256, "tab\there"):
        refused = client.post("/api/artifacts", params={"name": bad}, content=b"x", headers=h)
        assert refused.status_code == 422, bad
    bad_type = client.post(
        "/api/artifacts", params={"name": "x"}, content=b"x", headers={**h, "Content-Type": "text"}
    )
    assert bad_type.status_code == 422


def test_an_upload_over_the_limit_is_a_413_and_stores_nothing(
    client: TestClient, as_tenant: AsTenant
) -> None:
    _, h = as_tenant("t")
    limit = client.app.state.runtime.artifacts.max_bytes  # type: ignore[attr-defined]
    over = client.post(
        "/api/artifacts", params={"name": "big"}, content=b"x" * (limit + 1), headers=h
    )
    assert over.status_code == 413
    at_limit = client.post("/api/artifacts", params={"name": "ok"}, content=b"x" * limit, headers=h)
    assert at_limit.status_code == 201  # larger than the gateway's 1 MiB for other bodies
    assert len(client.get("/api/artifacts", headers=h).json()["items"]) == 1

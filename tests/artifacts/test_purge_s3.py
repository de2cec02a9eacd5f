"""A purge on the S3 store: the tenant's objects in the bucket are gone (and the other
tenant's are not), checked by listing the tenant's prefix on the real server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.gateway import create_app
from tenantguard.purge import Purger
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock
from tests.artifacts.conftest import S3Server

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]


@pytest.fixture
def client(
    s3_server: S3Server,
    bucket: str,
    settings: Settings,
    db: Database,
    clock: FakeClock,
    keyring: Keyring,
) -> Iterator[TestClient]:
    app = create_app(
        s3_server.settings(settings, bucket), database=db, clock=clock, keyring=keyring
    )
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_a_purge_empties_the_tenants_prefix_in_the_bucket(
    client: TestClient, as_tenant: AsTenant, s3_server: S3Server, bucket: str
) -> None:
    a, ha = as_tenant("a")
    b, hb = as_tenant("b")
    for h in (ha, ha, hb):
        made = client.post("/api/artifacts", params={"name": "f"}, content=b"x", headers=h)
        assert made.status_code == 201, made.text
    raw = s3_server.store(bucket, prefix="tg/")  # the deployment's prefix, read directly
    assert len(raw.keys(f"orgs/{a.tenant_id}/artifacts/")) == 2
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    actor = TenantContext(PLATFORM_TENANT_ID, Principal("system", "tests"), frozenset(), "p")
    report = Purger(rt.db, rt.keyring, rt.artifacts.store, rt.data_root, rt.clock).purge(
        actor, a.tenant_id
    )
    assert report.verified
    assert report.objects == 2
    assert raw.keys(f"orgs/{a.tenant_id}/artifacts/") == []
    assert len(raw.keys(f"orgs/{b.tenant_id}/artifacts/")) == 1
    raw.close()

"""The artifact stores: one contract for both (put, get, delete, list by prefix), the local
store's refusals of links and odd files, and the S3 store against a real S3-compatible server
process that checks signatures, reached only through the egress guard."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from tenantguard.artifacts.sigv4 import Credentials
from tenantguard.artifacts.stores import (
    ArtifactPathRefused,
    ArtifactStoreUnavailable,
    LocalStore,
    ObjectStore,
    S3Store,
    object_key,
    s3_policy,
)
from tenantguard.errors import ConfigurationError, NotFound
from tests.artifacts.conftest import S3Server


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalStore(tmp_path)
        return
    server: S3Server = request.getfixturevalue("s3_server")
    found = server.store(request.getfixturevalue("bucket"), prefix="deploy-1/")
    yield found
    found.close()


def test_the_contract(store: ObjectStore) -> None:
    tenant, other = uuid4(), uuid4()
    first, second = uuid4(), uuid4()
    store.put(object_key(tenant, first), b"one")
    store.put(object_key(tenant, second), b"two" * 1000)
    store.put(object_key(other, first), b"theirs")
    assert store.get(object_key(tenant, first)) == b"one"
    assert store.get(object_key(tenant, second)) == b"two" * 1000
    assert store.keys(object_key(tenant)) == sorted(
        [object_key(tenant, first), object_key(tenant, second)]
    )
    store.put(object_key(tenant, first), b"replaced")
    assert store.get(object_key(tenant, first)) == b"replaced"
    store.delete(object_key(tenant, first))
    store.delete(object_key(tenant, first))  # absent is fine
    with pytest.raises(NotFound):
        store.get(object_key(tenant, first))
    assert store.keys(object_key(tenant)) == [object_key(tenant, second)]
    assert store.keys(object_key(uuid4())) == []
    assert store.get(object_key(other, first)) == b"theirs"


def test_keys_that_object_key_never_makes_are_refused(store: ObjectStore) -> None:
    for bad in ("", "orgs/../x", "orgs//x", "/orgs/x", "orgs/x/", "orgs/./x", "a\x00b"):
        with pytest.raises(ArtifactPathRefused):
            store.put(bad, b"x")


def test_a_listing_of_many_pages(s3_server: S3Server, bucket: str) -> None:
    store = s3_server.store(bucket)
    store.page_size = 2
    tenant = uuid4()
    made = sorted(object_key(tenant, uuid4()) for _ in range(5))
    for key in made:
        store.put(key, b"x")
    assert store.keys(object_key(tenant)) == made


def test_a_wrong_secret_is_refused_by_the_server(s3_server: S3Server, bucket: str) -> None:
    """The server checks signatures: so the right one, accepted above, is really right."""
    store = s3_server.store(bucket, secret=s3_server.secret_key[:-1] + "x")
    with pytest.raises(ArtifactStoreUnavailable):
        store.put(object_key(uuid4(), uuid4()), b"x")


def test_the_s3_store_goes_through_the_egress_guard(s3_server: S3Server, bucket: str) -> None:
    """Without the operator's grant of its network, a loopback endpoint is not reached."""
    creds = Credentials(s3_server.access_key, s3_server.secret_key, "us-east-1")
    ungranted = S3Store(
        s3_server.endpoint, bucket, creds, policy=s3_policy(s3_server.endpoint, None, 1024)
    )
    with pytest.raises(ArtifactStoreUnavailable):
        ungranted.put(object_key(uuid4(), uuid4()), b"x")


def test_an_endpoint_is_a_scheme_a_host_and_a_port() -> None:
    for bad in ("ftp://s3.example", "https://s3.example/path", "s3.example", "https://"):
        with pytest.raises(ConfigurationError):
            s3_policy(bad, None, 1024)
    with pytest.raises(ConfigurationError):
        s3_policy("http://169.254.169.254", "169.254.169.254/32", 1024)  # metadata: never
    assert s3_policy("https://s3.example", None, 1024).allowed_ports == frozenset({443})


# The local store: what it refuses on the way.


def _plant(root: Path, tenant: str) -> Path:
    (root / "orgs").mkdir(parents=True, exist_ok=True)
    elsewhere = root.parent / f"elsewhere-{uuid4().hex[:6]}"
    elsewhere.mkdir()
    return elsewhere


def test_a_link_planted_on_the_way_is_refused_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    store = LocalStore(root)
    tenant, artifact = uuid4(), uuid4()
    elsewhere = _plant(root, str(tenant))
    (root / "orgs" / str(tenant)).symlink_to(elsewhere)  # the tenant's directory, a link
    with pytest.raises(ArtifactPathRefused):
        store.put(object_key(tenant, artifact), b"secret")
    assert list(elsewhere.iterdir()) == []
    (root / "orgs" / str(tenant)).unlink()
    store.put(object_key(tenant, artifact), b"mine")
    artifacts = root / "orgs" / str(tenant) / "artifacts"
    os.rename(artifacts, tmp_path / "moved")
    artifacts.symlink_to(tmp_path / "moved")  # its artifacts directory, a link
    with pytest.raises(ArtifactPathRefused):
        store.get(object_key(tenant, artifact))
    with pytest.raises(ArtifactPathRefused):
        store.keys(object_key(tenant))


def test_a_file_swapped_for_a_link_or_a_hard_link_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    tenant, artifact = uuid4(), uuid4()
    store.put(object_key(tenant, artifact), b"mine")
    path = tmp_path / object_key(tenant, artifact)
    outside = tmp_path / "outside"
    outside.write_bytes(b"not an artifact")
    path.unlink()
    path.symlink_to(outside)
    with pytest.raises(ArtifactPathRefused):
        store.get(object_key(tenant, artifact))
    path.unlink()
    os.link(outside, path)
    with pytest.raises(ArtifactPathRefused):
        store.get(object_key(tenant, artifact))
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ArtifactPathRefused):
        store.get(object_key(tenant, artifact))  # would block a reader forever


def test_files_are_private_to_the_service(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    tenant, artifact = uuid4(), uuid4()
    store.put(object_key(tenant, artifact), b"x")
    assert (tmp_path / object_key(tenant, artifact)).stat().st_mode & 0o077 == 0
    assert (tmp_path / "orgs" / str(tenant) / "artifacts").stat().st_mode & 0o077 == 0
    assert not [
        p
        for p in (tmp_path / "orgs" / str(tenant) / "artifacts").iterdir()
        if p.name.startswith(".tg-")
    ]

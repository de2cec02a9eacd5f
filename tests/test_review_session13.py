"""Review of the last six changes (session 13): the pool's prologue and its retry, the vault's
RecentReads, the model path's one transaction, the PII prefilter, the pipelined audit head,
inbound webhooks and the workspace's whole-tree limits. Four tests here demonstrated defects
(marked strict xfail until fixed: a pool that retried only once after a restart, the webhook
answers that told which sources exist, a 500 on a non-ASCII signature, a workspace walk that
ran out of file descriptors); the others hold what was suspected and found to hold."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest
from fastapi.testclient import TestClient

from tenantguard.audit.store import iter_events
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import DatabaseUnavailable
from tenantguard.pii.detectors import DetectorRegistry, default_detectors
from tenantguard.testing import FakeClock, TestDatabase
from tenantguard.tools.workspace import Workspace, WorkspaceFull
from tenantguard.webhooks.signing import new_secret, secret_bytes, signature_header

AsTenant = Callable[[str], tuple[NewTenant, dict[str, str]]]
BODY = b'{"type": "invoice.paid", "data": {"id": "in_1"}}'


# -- the pool ----------------------------------------------------------------------------------


@pytest.fixture
def single(pg: TestDatabase) -> Iterator[Database]:
    """One connection: every checkout reuses it."""
    with Database(pg.app_url, min_size=1, max_size=1) as db:
        yield db


def _state(db: Database) -> tuple[object, ...]:
    with db.system_transaction() as tx:
        row = tx.execute(
            "SELECT current_setting('app.tenant_id', true), current_setting('synchronous_commit')"
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_every_idle_connection_dropped_still_gives_the_caller_a_transaction(
    pg: TestDatabase,
) -> None:
    """The module note: a connection the server dropped fails its prologue and is replaced by
    a fresh one before the caller sees it. After a restart every idle connection is dead."""
    name = f"tg-review-{uuid4().hex[:8]}"
    with Database(pg.app_url, min_size=2, max_size=2, application_name=name) as db:
        with psycopg.connect(pg.app_url.get_secret_value(), autocommit=True) as other:
            killed = other.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
                " FROM pg_stat_activity WHERE application_name = %s",
                (name,),
            ).fetchone()
        assert killed == (2,)
        with db.system_transaction() as tx:
            assert tx.execute("SELECT 1").fetchone() == (1,)


def test_a_commit_lost_with_its_connection_is_a_503_and_the_next_transaction_is_clean(
    single: Database, pg: TestDatabase
) -> None:
    """The server drops the connection inside a transaction: its COMMIT fails typed (503), the
    dead connection is not handed out again, and the next transaction has no tenant."""
    tenant = uuid4()

    def drop_and_commit() -> None:
        with (
            single.tenant_transaction(tenant, durable=False) as tx,
            psycopg.connect(pg.app_url.get_secret_value(), autocommit=True) as other,
        ):
            row = tx.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            other.execute("SELECT pg_terminate_backend(%s, 5000)", (row[0],))

    with pytest.raises(DatabaseUnavailable):
        drop_and_commit()
    assert _state(single) in (("", "on"), (None, "on"))


def test_a_generator_closed_inside_a_transaction_rolls_it_back(single: Database) -> None:
    """GeneratorExit thrown into an open transaction ends it; nothing of it is kept."""
    tenant = uuid4()

    def rows() -> Generator[int]:
        with single.tenant_transaction(tenant, durable=False) as tx:
            tx.execute("SELECT set_config('app.review', 'left', false)")  # session-level
            yield 1
            yield 2

    it = rows()
    assert next(it) == 1
    it.close()
    assert _state(single) in (("", "on"), (None, "on"))
    with single.system_transaction() as tx:
        assert tx.execute("SELECT current_setting('app.review', true)").fetchone() in (
            ("",),
            (None,),
        )


# -- PII prefilter -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "call me on +44 20 7946 0958 tomorrow",
        "card 4111 1111 1111 1111 exp 12/29",
        "IBAN DE89 3704 0044 0532 0130 00",
        "mail jane.doe@example.com or ssn 078-05-1120",
        "nothing here at all",
        "".join(chr(ord(c) + 0xFEE0) for c in "jane@example.com"),  # full-width forms
    ],
)
def test_the_prefilter_changes_no_finding(text: str) -> None:
    """Every patterned detector's spans are matches of its pattern: skipping it where the
    pattern matches nowhere finds the same."""
    detectors = default_detectors()
    with_filter = DetectorRegistry(detectors).scan(text)
    without = DetectorRegistry(detectors, prefilter=False).scan(text)
    assert with_filter == without


# -- inbound webhooks --------------------------------------------------------------------------


def _source(client: TestClient, h: dict[str, str], name: str, secret: str) -> str:
    assert client.put(f"/api/secrets/{name}-key", json={"value": secret}, headers=h).is_success
    made = client.put(
        f"/api/webhook-sources/{name}", json={"scheme": "standard", "secret": f"{name}-key"},
        headers=h,
    )  # fmt: skip
    assert made.status_code == 200, made.text
    return str(made.json()["url"])


def _events(db: Database, tenant_id: UUID, action: str) -> list[tuple[str, str, str]]:
    with db.tenant_transaction(tenant_id) as tx:
        return [
            (e.action, e.outcome, e.reason)
            for e in iter_events(tx, tenant_id=tenant_id)
            if e.action == action
        ]


def test_an_unsigned_request_does_not_tell_whether_the_source_exists(
    client: TestClient, as_tenant: AsTenant, clock: FakeClock
) -> None:
    """The module note: a request for a source that does not exist is refused like a bad
    signature, 'the answer must not tell which sources exist'. Without any signature (all an
    outsider needs to probe names), or with a stale one, both must answer the same."""
    _, h = as_tenant("t")
    url = _source(client, h, "billing", new_secret())
    unknown = url.replace("/billing", "/payroll")
    old = int(clock.now().timestamp()) - 3600
    stale = {"webhook-id": "m1", "webhook-timestamp": str(old), "webhook-signature": "v1,AAAA"}
    for headers in ({}, stale):
        known = client.post(url, content=BODY, headers=headers)
        missing = client.post(unknown, content=BODY, headers=headers)
        assert (known.status_code, known.json()["code"]) == (
            missing.status_code,
            missing.json()["code"],
        )


def test_a_signature_with_a_non_ascii_byte_is_a_401_malformed_and_audited(
    client: TestClient, as_tenant: AsTenant, db: Database, clock: FakeClock
) -> None:
    tenant, h = as_tenant("t")
    url = _source(client, h, "billing", new_secret())
    now = int(clock.now().timestamp())
    headers = [
        (b"webhook-id", b"msg_1"),
        (b"webhook-timestamp", str(now).encode()),
        (b"webhook-signature", b"v1,\xe9"),  # latin-1 in the header: anyone can send it
    ]
    refused = client.post(url, content=BODY, headers=headers)
    assert refused.status_code == 401
    assert refused.json()["code"] == "webhook_malformed"
    assert _events(db, tenant.tenant_id, "webhook.received") == [
        ("webhook.received", "denied", "webhook_malformed")
    ]


def test_a_refused_webhook_does_not_count_as_an_audited_read(
    client: TestClient, as_tenant: AsTenant, db: Database, clock: FakeClock
) -> None:
    """A forged request's transaction (and its secret.read) rolls back: RecentReads is not
    marked, so the first accepted request still writes its secret.read."""
    tenant, h = as_tenant("t")
    secret = new_secret()
    url = _source(client, h, "billing", secret)
    now = int(clock.now().timestamp())
    forged = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": signature_header([b"k" * 32], "msg_1", now, BODY),
    }
    assert client.post(url, content=BODY, headers=forged).json()["code"] == (
        "webhook_signature_invalid"
    )
    assert _events(db, tenant.tenant_id, "secret.read") == []
    good = {
        **forged,
        "webhook-signature": signature_header([secret_bytes(secret)], "msg_1", now, BODY),
    }
    assert client.post(url, content=BODY, headers=good).status_code == 200
    assert _events(db, tenant.tenant_id, "secret.read") == [("secret.read", "success", "")]


# -- the workspace -----------------------------------------------------------------------------


@pytest.fixture
def few_descriptors() -> Iterator[int]:
    """The soft limit of open files at 1024 (Linux's usual default for a service) for the
    test's duration."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        yield 1024
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_wide_workspace_within_its_limits_still_takes_a_write(
    tmp_path: Path, few_descriptors: int
) -> None:
    """1,100 directories holding one file each (2,200 entries, what 1,100 writes of `dN/f`
    make) is within the default limits: the next write succeeds."""
    workspace = Workspace(tmp_path / "ws")
    workspace.write("first.txt", b"x")
    for i in range(few_descriptors + 76):
        directory = workspace.root / f"d{i}"
        directory.mkdir(mode=0o700)
        (directory / "f").write_bytes(b"x")
    assert workspace.write("d0/g", b"y") == 1


def test_the_entries_limit_counts_past_a_truncated_walk(tmp_path: Path) -> None:
    """A walk that stops counting at the limit never lets a new file in, nor a rewrite of one
    (the bytes past the stop are unknown)."""
    workspace = Workspace(tmp_path / "ws", max_entries=10)
    for i in range(10):
        workspace.write(f"f{i}", b"x")
    os.mkdir(workspace.root / "extra")  # one more, made outside the tools: 11 entries
    with pytest.raises(WorkspaceFull):
        workspace.write("new", b"x")
    with pytest.raises(WorkspaceFull):
        workspace.write("f0", b"xx")

"""Checkpoints published to a real NATS JetStream server (the machine's, or the one
scripts/test starts): acknowledged and stored with the checkpoint's id, or the checkpoint is
not stored at all."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar
from uuid import uuid4

import nats
import pytest
from nats.js.client import JetStreamContext

from tenantguard.audit.checkpoints import Checkpointer, stored
from tenantguard.audit.publish import JetStreamPublisher
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.errors import AuditUnavailable
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock

NATS_URL = os.environ.get("TENANTGUARD_TEST_NATS_URL", "nats://127.0.0.1:4222")


T = TypeVar("T")


async def _with_stream_api(action: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    client = await nats.connect(NATS_URL, connect_timeout=5)
    try:
        return await action(client.jetstream())
    finally:
        await client.close()


def _admin(action: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    return asyncio.run(_with_stream_api(action))


@pytest.fixture
def stream() -> Iterator[tuple[str, str]]:
    """A stream of its own for this test: (stream name, subject prefix)."""
    tag = uuid4().hex[:12]
    name, prefix = f"TGTEST{tag}", f"tgtest{tag}"
    _admin(lambda js: js.add_stream(name=name, subjects=[f"{prefix}.>"]))
    yield name, prefix
    _admin(lambda js: js.delete_stream(name))


def _checkpointer(
    db: Database, keyring: Keyring, clock: FakeClock, settings: Settings, prefix: str
) -> Checkpointer:
    publisher = JetStreamPublisher(NATS_URL, subject_prefix=prefix)
    return Checkpointer(db, keyring, settings.checkpoints(), clock=clock, publisher=publisher)


def test_a_checkpoint_is_published_and_acknowledged(
    db: Database,
    keyring: Keyring,
    clock: FakeClock,
    settings: Settings,
    signing_key: str,
    make_tenant: Callable[[str], NewTenant],
    stream: tuple[str, str],
) -> None:
    name, prefix = stream
    tenant = make_tenant("t")
    made = _checkpointer(db, keyring, clock, settings, prefix).checkpoint(tenant.tenant_id)
    assert made is not None
    message = _admin(lambda js: js.get_msg(name, 1))
    assert message.subject == f"{prefix}.{tenant.tenant_id}"
    assert (message.data or b"").decode() == made.note
    assert (message.headers or {})["Nats-Msg-Id"] == str(made.id)


def test_an_unacknowledged_checkpoint_is_not_stored(
    db: Database,
    keyring: Keyring,
    clock: FakeClock,
    settings: Settings,
    signing_key: str,
    make_tenant: Callable[[str], NewTenant],
) -> None:
    """No stream covers the subject: JetStream does not acknowledge, and nothing is stored."""
    tenant = make_tenant("t")
    nowhere = f"tgnostream{uuid4().hex[:12]}"
    with pytest.raises(AuditUnavailable):
        _checkpointer(db, keyring, clock, settings, nowhere).checkpoint(tenant.tenant_id)
    with db.tenant_transaction(tenant.tenant_id) as tx:
        assert stored(tx, tenant.tenant_id) == []

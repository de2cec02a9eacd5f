"""Magic-link sign-in through a real SMTP server process, and the outbox default."""

from __future__ import annotations

import mailbox
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tenantguard.audit import list_events
from tenantguard.cli import app as cli
from tenantguard.context import PLATFORM_TENANT_ID
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.gateway import create_app
from tenantguard.identity import users
from tenantguard.identity.sessions import Issued
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock

SignIn = Callable[[NewTenant, str], tuple[users.User, Issued]]
LINK = re.compile(r"tenant=([0-9a-f-]{36})&token=(tg_ml_[0-9A-Za-z]{38})")


@dataclass(frozen=True)
class SmtpSink:
    port: int
    maildir: Path

    def links(self) -> list[tuple[str, str, str]]:
        """(recipient, tenant, token) of every message received."""
        found = []
        for message in mailbox.Maildir(self.maildir):
            payload = message.get_payload(decode=True)
            assert isinstance(payload, bytes)
            match = LINK.search(payload.decode())
            assert match is not None
            found.append((str(message["To"]), match[1], match[2]))
        return found


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpSink]:
    """aiosmtpd in its own process on a free loopback port, delivering into a Maildir."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    maildir = tmp_path / "maildir"
    process = subprocess.Popen(  # noqa: S603 (our interpreter, fixed arguments)
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{port}",
            "-c",
            "aiosmtpd.handlers.Mailbox",
            str(maildir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):  # wait until it accepts connections (bounded)
            with socket.socket() as conn:
                if conn.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the SMTP server did not start")
        yield SmtpSink(port, maildir)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def mail_client(
    smtp: SmtpSink,
    tmp_path: Path,
    db: Database,
    clock: FakeClock,
    keyring: Keyring,
    signing_key: str,
) -> Iterator[TestClient]:
    settings = Settings(
        data_root=tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        magic_link_floor_seconds=0.0,
        public_url="https://gw.example",
    )
    with TestClient(create_app(settings, database=db, clock=clock, keyring=keyring)) as client:
        yield client


def test_link_by_smtp_signs_in_once(
    mail_client: TestClient,
    smtp: SmtpSink,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
) -> None:
    """The link arrives through SMTP, opens a session (amr email), and works only once."""
    tenant = make_tenant("t")
    user, _ = sign_in(tenant, "member")
    answer = mail_client.post(
        "/api/auth/magic-link", json={"tenant": str(tenant.tenant_id), "email": user.email.upper()}
    )
    assert answer.status_code == 202
    ((to, link_tenant, token),) = smtp.links()
    assert (to, link_tenant) == (user.email, str(tenant.tenant_id))
    redeemed = mail_client.post(
        "/api/auth/magic-link/redeem", json={"tenant": link_tenant, "token": token}
    )
    assert redeemed.status_code == 200
    access = redeemed.json()["access_token"]
    sessions = mail_client.get("/api/sessions", headers={"Authorization": f"Bearer {access}"})
    assert [s["amr"] for s in sessions.json() if s["current"]] == [["email"]]
    again = mail_client.post(
        "/api/auth/magic-link/redeem", json={"tenant": link_tenant, "token": token}
    )
    assert again.status_code == 401


def test_no_enumeration(
    mail_client: TestClient,
    smtp: SmtpSink,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    db: Database,
) -> None:
    """Known user, unknown user, unknown tenant, malformed address: the same 202; mail only
    for the known user; the audit says which was which."""
    tenant = make_tenant("t")
    user, _ = sign_in(tenant, "member")
    cases = {
        "known": {"tenant": str(tenant.tenant_id), "email": user.email},
        "unknown user": {"tenant": str(tenant.tenant_id), "email": "nobody@example.com"},
        "unknown tenant": {"tenant": "00000000-0000-4000-8000-00000000abcd", "email": user.email},
        "malformed": {"tenant": str(tenant.tenant_id), "email": "not an address"},
    }
    answers = {
        name: mail_client.post(
            "/api/auth/magic-link", json=body, headers={"X-Request-ID": f"ml-{i}"}
        )
        for i, (name, body) in enumerate(cases.items())
    }
    assert {a.status_code for a in answers.values()} == {202}
    assert len({a.text for a in answers.values()}) == 1
    assert [to for to, _, _ in smtp.links()] == [user.email]
    with db.tenant_transaction(tenant.tenant_id) as tx:
        mine = {e.request_id: e.reason for e in list_events(tx, tenant_id=tenant.tenant_id)}
    with db.tenant_transaction(PLATFORM_TENANT_ID) as tx:
        platform = {
            e.request_id: e.reason
            for e in list_events(tx, tenant_id=PLATFORM_TENANT_ID, limit=100_000)
        }
    assert (mine["ml-0"], mine["ml-1"], mine["ml-3"]) == ("", "unknown_user", "unknown_user")
    assert platform["ml-2"] == "unknown_tenant"


def test_links_expire_and_are_bound_to_their_tenant(
    mail_client: TestClient,
    smtp: SmtpSink,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    clock: FakeClock,
) -> None:
    a, b = make_tenant("A"), make_tenant("B")
    user, _ = sign_in(a, "member")
    for _ in range(2):
        mail_client.post(
            "/api/auth/magic-link", json={"tenant": str(a.tenant_id), "email": user.email}
        )
    (_, _, first), (_, _, second) = smtp.links()
    other_tenant = mail_client.post(
        "/api/auth/magic-link/redeem", json={"tenant": str(b.tenant_id), "token": first}
    )
    assert other_tenant.status_code == 401
    clock.advance(timedelta(minutes=15, seconds=1))
    expired = mail_client.post(
        "/api/auth/magic-link/redeem", json={"tenant": str(a.tenant_id), "token": second}
    )
    assert expired.status_code == 401


def test_mail_server_down_still_answers_202(
    tmp_path: Path,
    db: Database,
    clock: FakeClock,
    keyring: Keyring,
    signing_key: str,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
) -> None:
    """Delivery failing is audited, not revealed: the caller still gets the same 202."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings = Settings(
        data_root=tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=closed_port,
        magic_link_floor_seconds=0.0,
    )
    tenant = make_tenant("t")
    user, _ = sign_in(tenant, "member")
    with TestClient(create_app(settings, database=db, clock=clock, keyring=keyring)) as client:
        answer = client.post(
            "/api/auth/magic-link",
            json={"tenant": str(tenant.tenant_id), "email": user.email},
            headers={"X-Request-ID": "mail-down"},
        )
    assert answer.status_code == 202
    with db.tenant_transaction(tenant.tenant_id) as tx:
        found = [
            e.reason
            for e in list_events(tx, tenant_id=tenant.tenant_id)
            if e.request_id == "mail-down"
        ]
    assert found == ["mail_failed"]


def test_outbox_default_and_cli(
    client: TestClient,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without SMTP the link lands in the outbox, which `tenantguard outbox` shows."""
    tenant = make_tenant("t")
    user, _ = sign_in(tenant, "member")
    client.post("/api/auth/magic-link", json={"tenant": str(tenant.tenant_id), "email": user.email})
    monkeypatch.setenv("TENANTGUARD_DATA_ROOT", str(settings.data_root))
    shown = CliRunner().invoke(cli, ["outbox"])
    assert shown.exit_code == 0, shown.output
    assert user.email in shown.stdout
    assert LINK.search(shown.stdout) is not None
    outbox = settings.data_root / "outbox"
    assert outbox.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in outbox.iterdir())


def test_using_one_link_burns_the_others(
    mail_client: TestClient,
    smtp: SmtpSink,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
) -> None:
    """Of several outstanding links, the first one used ends them all."""
    tenant = make_tenant("t")
    user, _ = sign_in(tenant, "member")
    for _ in range(3):
        mail_client.post(
            "/api/auth/magic-link", json={"tenant": str(tenant.tenant_id), "email": user.email}
        )
    tokens = [token for _, _, token in smtp.links()]
    first = mail_client.post(
        "/api/auth/magic-link/redeem", json={"tenant": str(tenant.tenant_id), "token": tokens[1]}
    )
    assert first.status_code == 200
    for token in (tokens[0], tokens[2]):
        later = mail_client.post(
            "/api/auth/magic-link/redeem", json={"tenant": str(tenant.tenant_id), "token": token}
        )
        assert later.status_code == 401

"""Adversarial review of the identity code: races on refresh rotation and on the last owner,
role hierarchy, magic links of removed users, TOTP guessing and replay, and the key cache."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from tenantguard.audit import list_events
from tenantguard.context import Principal, TenantContext
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.tenants import NewTenant
from tenantguard.db import Database
from tenantguard.db.pool import Connection
from tenantguard.errors import InvalidCredentials, TenantGuardError
from tenantguard.identity import sessions, totp, users
from tenantguard.identity.sessions import Issued, PublicKeyCache, Sessions
from tenantguard.mail import OutboxMailer
from tenantguard.settings import Settings
from tenantguard.testing import FakeClock
from tests.support import bearer, enrolled

SignIn = Callable[..., tuple[users.User, Issued]]
LINK = re.compile(r"tenant=([0-9a-f-]{36})&token=(tg_ml_[0-9A-Za-z]{38})")
ACTOR = Principal(type="system", id="review")


class _RaceDatabase:
    """A `Database` stand-in that runs `hook` between the refresh token's lookup (the system
    transaction) and the tenant transaction that rotates it: a concurrent request, in order."""

    def __init__(self, real: Database, hook: Callable[[], None]) -> None:
        self._real, self._hook, self._armed = real, hook, False

    @contextmanager
    def system_transaction(self) -> Iterator[Connection]:
        with self._real.system_transaction() as tx:
            yield tx
        self._armed = True

    @contextmanager
    def tenant_transaction(self, tenant_id: UUID) -> Iterator[Connection]:
        if self._armed:
            self._armed = False
            self._hook()
        with self._real.tenant_transaction(tenant_id) as tx:
            yield tx


def test_concurrent_refreshes_with_one_token_count_as_reuse(
    db: Database,
    keyring: Keyring,
    clock: FakeClock,
    settings: Settings,
    sessions_service: Sessions,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Of two refreshes racing with one token, one wins and the other is refused as reuse,
    revoking the session."""
    tenant = make_tenant("race")
    _, login = sign_in(tenant, "member")
    rival = Sessions(db, keyring, settings.tokens(), clock=clock)
    won: list[Issued] = []

    def first_request() -> None:
        won.append(rival.refresh(login.refresh_token, request_id="rival"))

    monkeypatch.setattr(sessions_service, "_db", _RaceDatabase(db, first_request))
    with pytest.raises(InvalidCredentials):
        sessions_service.refresh(login.refresh_token, request_id="second")
    assert len(won) == 1
    with db.tenant_transaction(tenant.tenant_id) as tx:
        assert sessions.get(tx, tenant.tenant_id, login.session.id).revoked_at is not None


def _owners(db: Database, tenant_id: UUID) -> int:
    with db.tenant_transaction(tenant_id) as tx:
        return sum(u.role == "owner" for u in users.list_users(tx, tenant_id))


def test_two_concurrent_demotions_keep_an_owner(
    db: Database,
    clock: FakeClock,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the interleaving, demoting owners never leaves a tenant without one."""
    tenant = make_tenant("owners")
    first, _ = sign_in(tenant, "owner")
    second, _ = sign_in(tenant, "owner")
    ctx = TenantContext(tenant.tenant_id, ACTOR, frozenset(), "review")
    try:
        with db.tenant_transaction(tenant.tenant_id) as tx1:
            # Request 1 has passed its owner check and written its UPDATE, and has not yet
            # reached its audit write (the tenant's audit lock, taken only after the check).
            with monkeypatch.context() as paused:
                paused.setattr(users, "record_action", lambda *_a, **_k: None)
                users.set_role(tx1, ctx, first.id, "member", now=clock.now())
            try:
                with db.tenant_transaction(tenant.tenant_id) as tx2:
                    # A correct fix may lock: then this one waits for tx1, which waits for it.
                    tx2.execute("SET LOCAL lock_timeout = '5s'")
                    users.set_role(tx2, ctx, second.id, "member", now=clock.now())
            except TenantGuardError:
                pass
    except TenantGuardError:
        pass
    assert _owners(db, tenant.tenant_id) >= 1


def test_an_admin_cannot_make_itself_owner(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn
) -> None:
    """An admin may not grant the owner role (and so may not take the tenant from its owner)."""
    tenant = make_tenant("hierarchy")
    owner, _ = sign_in(tenant, "owner")
    admin, login = sign_in(tenant, "admin")
    h = bearer(login.access_token)
    promoted = client.patch(f"/api/users/{admin.id}", json={"role": "owner"}, headers=h)
    if promoted.status_code == 200:
        # Show what follows: the original owner is demoted by the former admin.
        demoted = client.patch(f"/api/users/{owner.id}", json={"role": "member"}, headers=h)
        assert demoted.status_code != 200, "the admin took the tenant from its owner"
    assert promoted.status_code == 403


def _outbox_token(settings: Settings) -> str:
    messages = OutboxMailer(settings.data_root / "outbox").messages()
    found = LINK.search(str(messages[-1].get_body(("plain",)).get_content()))  # type: ignore[union-attr]
    assert found is not None
    return found[2]


def test_link_of_a_removed_user_is_the_same_401_and_audited(
    client: TestClient,
    db: Database,
    clock: FakeClock,
    settings: Settings,
    make_tenant: Callable[[str], NewTenant],
    sign_in: SignIn,
) -> None:
    """A link whose user was removed after it was sent is refused with the one 401 and audited."""
    tenant = make_tenant("removed")
    user, _ = sign_in(tenant, "member")
    sent = client.post(
        "/api/auth/magic-link", json={"tenant": str(tenant.tenant_id), "email": user.email}
    )
    assert sent.status_code == 202
    token = _outbox_token(settings)
    ctx = TenantContext(tenant.tenant_id, ACTOR, frozenset(), "review")
    with db.tenant_transaction(tenant.tenant_id) as tx:
        users.remove(tx, ctx, user.id, now=clock.now())
    answer = client.post(
        "/api/auth/magic-link/redeem",
        json={"tenant": str(tenant.tenant_id), "token": token},
        headers={"X-Request-ID": "redeem-removed"},
    )
    unknown = client.post(
        "/api/auth/magic-link/redeem",
        json={"tenant": str(tenant.tenant_id), "token": "tg_ml_" + "A" * 38},
    )
    assert answer.status_code == 401
    assert answer.json()["detail"] == unknown.json()["detail"]
    with db.tenant_transaction(tenant.tenant_id) as tx:
        events = list_events(tx, tenant_id=tenant.tenant_id, limit=500)
    assert [e.outcome for e in events if e.request_id == "redeem-removed"] == ["failure"]


def test_step_up_guessing_is_limited(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn, clock: FakeClock
) -> None:
    """After many wrong TOTP codes, step-up stops accepting codes for the session."""
    _, login = sign_in(make_tenant("guess"), "owner", amr=("email",))
    seed, _ = enrolled(client, login, clock)
    h = bearer(login.access_token)
    right = totp.code_at(seed, totp.step_of(clock.now()) + 1)
    wrong = [f"{n:06d}" for n in range(40) if f"{n:06d}" != right][:30]
    for code in wrong:
        assert client.post("/api/auth/step-up", json={"code": code}, headers=h).status_code == 401
    assert client.post("/api/auth/step-up", json={"code": right}, headers=h).status_code != 200


def test_a_code_used_in_one_session_is_refused_in_another(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn, clock: FakeClock
) -> None:
    """TOTP replay protection is per user, not per session: a code works once across sessions."""
    tenant = make_tenant("replay")
    user, login = sign_in(tenant, "member", amr=("email",))
    seed, _ = enrolled(client, login, clock)
    h = bearer(login.access_token)
    clock.advance(timedelta(seconds=30))
    code = totp.code_at(seed, totp.step_of(clock.now()))
    assert client.post("/api/auth/step-up", json={"code": code}, headers=h).status_code == 200
    runtime_sessions: Sessions = client.app.state.runtime.sessions  # type: ignore[attr-defined]
    other = runtime_sessions.start(tenant.tenant_id, user.id, amr=("email",), request_id="other")
    again = client.post(
        "/api/auth/step-up", json={"code": code}, headers=bearer(other.access_token)
    )
    assert again.status_code == 401


def test_recovery_code_variants_are_one_code(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn, clock: FakeClock
) -> None:
    """A used recovery code cannot be replayed by changing its case or dropping its dash."""
    _, login = sign_in(make_tenant("recovery"), "admin", amr=("email",))
    _, codes = enrolled(client, login, clock)
    h = bearer(login.access_token)
    used = codes[0]
    assert (
        client.post("/api/auth/step-up", json={"recovery_code": used}, headers=h).status_code == 200
    )
    for variant in (used.lower(), used.replace("-", ""), used.lower().replace("-", "")):
        answer = client.post("/api/auth/step-up", json={"recovery_code": variant}, headers=h)
        assert answer.status_code == 401


def test_step_up_and_refresh_end_with_the_session(
    client: TestClient, make_tenant: Callable[[str], NewTenant], sign_in: SignIn, clock: FakeClock
) -> None:
    """After logout, neither step-up with a valid code nor refresh revives the session."""
    _, login = sign_in(make_tenant("ended"), "admin", amr=("email",))
    seed, _ = enrolled(client, login, clock)
    h = bearer(login.access_token)
    assert client.post("/api/auth/logout", headers=h).status_code == 204
    clock.advance(timedelta(seconds=30))
    code = totp.code_at(seed, totp.step_of(clock.now()))
    assert client.post("/api/auth/step-up", json={"code": code}, headers=h).status_code == 401
    refreshed = client.post("/api/auth/refresh", json={"refresh_token": login.refresh_token})
    assert refreshed.status_code == 401


def test_key_cache_reloads_at_most_once_per_interval_on_unknown_kids(
    db: Database, clock: FakeClock, signing_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of random kids costs at most one key reload per `min_reload` seconds."""
    now = [100.0]
    cache = PublicKeyCache(db, clock, ttl=60.0, min_reload=1.0, monotonic=lambda: now[0])
    reloads: list[float] = []
    real = cache._reload

    def counted() -> None:
        reloads.append(now[0])
        real()

    monkeypatch.setattr(cache, "_reload", counted)
    assert cache.get(signing_key) is not None
    for n in range(50):
        assert cache.get(f"{n:043d}") is None
    assert len(reloads) == 1
    now[0] += 1.5
    for n in range(50):
        cache.get(f"{n:043d}")
    assert len(reloads) == 2

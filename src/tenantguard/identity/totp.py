"""TOTP second factors (RFC 6238) and hashed one-time recovery codes.

Enrolment shows the seed once (an `otpauth://` URI and a QR code) and stays pending until a
code proves the authenticator has it. Verification accepts the current step and one on either
side, and refuses any step at or before the last one used: a code works once. The seed is a
sealed column (the tenant's data key, bound to the user); recovery codes are stored as SHA-256
only, each usable once.

Threat stopped: a stolen first factor alone; a code shoulder-surfed and replayed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import pyotp
import segno

from tenantguard.audit.store import record_action
from tenantguard.authz import PLATFORM_ROLES, ROLES
from tenantguard.context import PLATFORM_TENANT_ID, TenantContext
from tenantguard.crypto.fields import EncryptedColumn
from tenantguard.crypto.keyring import Keyring
from tenantguard.db.pool import Connection, Database
from tenantguard.errors import Conflict, InvalidCredentials, NotFound, RequestInvalid

TOTP_SEED = EncryptedColumn("totp_factors", "seed", ("user_id",))
STEP = 30
DIGITS = 6
RECOVERY_CODES = 10
ISSUER = "tenantguard"
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Enrolment:
    """Shown once: the seed, its otpauth URI and a QR code of it (SVG data URI)."""

    secret: str
    otpauth_uri: str
    qr_svg: str


def step_of(now: datetime) -> int:
    return int(now.timestamp()) // STEP


def code_at(seed: str, step: int) -> str:
    return pyotp.TOTP(seed, digits=DIGITS, interval=STEP).at(step * STEP)


def matching_step(seed: str, code: str, *, now: datetime, after: int) -> int | None:
    """The step within ±1 of now whose code is `code`, if later than `after`."""
    current = step_of(now)
    found = None
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(code_at(seed, step), code) and step > after and found is None:
            found = step
    return found


def _hash(code: str) -> bytes:
    return hashlib.sha256(code.replace("-", "").upper().encode()).digest()


def enroll(
    conn: Connection,
    ctx: TenantContext,
    keyring: Keyring,
    user_id: UUID,
    email: str,
    *,
    now: datetime,
) -> Enrolment:
    """Start (or restart) enrolment. An active factor must be removed first."""
    existing = conn.execute(
        "SELECT status FROM tenantguard.totp_factors WHERE tenant_id = %s AND user_id = %s"
        " FOR UPDATE",
        (ctx.tenant_id, user_id),
    ).fetchone()
    if existing is not None and existing[0] == "active":
        raise Conflict("A TOTP factor is already active.")
    seed = base64.b32encode(secrets.token_bytes(20)).decode()  # 160 bits (RFC 4226)
    sealed = TOTP_SEED.seal(keyring, conn, ctx, (user_id,), seed.encode())
    conn.execute(
        "INSERT INTO tenantguard.totp_factors (tenant_id, user_id, seed, status, created_at)"
        " VALUES (%s, %s, %s, 'pending', %s) ON CONFLICT (tenant_id, user_id) DO UPDATE"
        " SET seed = EXCLUDED.seed, created_at = EXCLUDED.created_at, last_step = 0",
        (ctx.tenant_id, user_id, sealed, now),
    )
    record_action(
        conn, ctx, action="mfa.totp.enroll", target_type="user", target_id=str(user_id), now=now
    )
    uri = pyotp.TOTP(seed, digits=DIGITS, interval=STEP).provisioning_uri(
        name=email, issuer_name=ISSUER
    )
    return Enrolment(seed, uri, segno.make(uri, error="m").svg_data_uri())


def _factor(
    conn: Connection, tenant_id: UUID, user_id: UUID, keyring: Keyring, *, now: datetime
) -> tuple[str, str, int]:
    row = conn.execute(
        "SELECT seed, status, last_step, failures, failures_since FROM tenantguard.totp_factors"
        " WHERE tenant_id = %s AND user_id = %s FOR UPDATE",
        (tenant_id, user_id),
    ).fetchone()
    if row is None:
        raise NotFound()
    failures, since = int(str(row[3])), row[4]
    if failures >= MAX_FAILURES and since is not None and since > now - FAILURE_WINDOW:
        # Locked: even the right code is refused, with the same answer as a wrong one.
        raise InvalidCredentials(
            "totp_locked", tenant_id=tenant_id, credential_id=f"totp:{user_id}"
        )
    seed = TOTP_SEED.open(keyring, conn, tenant_id, (user_id,), bytes(row[0])).decode()
    return seed, str(row[1]), int(str(row[2]))


def note_failure(db: Database, tenant_id: UUID, user_id: UUID, *, now: datetime) -> None:
    """Count a wrong code, in a transaction of its own (the failed one rolled back)."""
    with db.tenant_transaction(tenant_id) as tx:
        tx.execute(
            "UPDATE tenantguard.totp_factors SET"
            " failures = CASE WHEN failures_since IS NULL OR failures_since <= %(start)s"
            "   THEN 1 ELSE failures + 1 END,"
            " failures_since = CASE WHEN failures_since IS NULL OR failures_since <= %(start)s"
            "   THEN %(now)s ELSE failures_since END"
            " WHERE tenant_id = %(tenant)s AND user_id = %(user)s",
            {"start": now - FAILURE_WINDOW, "now": now, "tenant": tenant_id, "user": user_id},
        )


def _passed(conn: Connection, tenant_id: UUID, user_id: UUID) -> None:
    conn.execute(
        "UPDATE tenantguard.totp_factors SET failures = 0, failures_since = NULL"
        " WHERE tenant_id = %s AND user_id = %s",
        (tenant_id, user_id),
    )


def _use_step(
    conn: Connection,
    tenant_id: UUID,
    user_id: UUID,
    *,
    code: str,
    seed: str,
    last: int,
    now: datetime,
) -> None:
    step = matching_step(seed, code, now=now, after=last)
    if step is None:
        raise InvalidCredentials("bad_totp", tenant_id=tenant_id, credential_id=f"totp:{user_id}")
    conn.execute(
        "UPDATE tenantguard.totp_factors SET last_step = %s WHERE tenant_id = %s AND user_id = %s",
        (step, tenant_id, user_id),
    )


def confirm(
    conn: Connection,
    ctx: TenantContext,
    keyring: Keyring,
    user_id: UUID,
    code: str,
    *,
    now: datetime,
) -> list[str]:
    """Activate a pending factor with a code; returns recovery codes (shown once)."""
    seed, status, last = _factor(conn, ctx.tenant_id, user_id, keyring, now=now)
    if status != "pending":
        raise Conflict("There is no pending TOTP enrolment.")
    _use_step(conn, ctx.tenant_id, user_id, code=code, seed=seed, last=last, now=now)
    conn.execute(
        "UPDATE tenantguard.totp_factors SET status = 'active', confirmed_at = %s"
        " WHERE tenant_id = %s AND user_id = %s",
        (now, ctx.tenant_id, user_id),
    )
    conn.execute(
        "DELETE FROM tenantguard.recovery_codes WHERE tenant_id = %s AND user_id = %s",
        (ctx.tenant_id, user_id),
    )
    codes = [
        f"{secrets.token_hex(4)}-{secrets.token_hex(4)}".upper() for _ in range(RECOVERY_CODES)
    ]
    for code_ in codes:
        conn.execute(
            "INSERT INTO tenantguard.recovery_codes (tenant_id, user_id, code_hash, created_at)"
            " VALUES (%s, %s, %s, %s)",
            (ctx.tenant_id, user_id, _hash(code_), now),
        )
    record_action(
        conn,
        ctx,
        action="mfa.totp.confirm",
        target_type="user",
        target_id=str(user_id),
        now=now,
        payload={"recovery_codes": RECOVERY_CODES},
    )
    return codes


def verify(
    conn: Connection,
    tenant_id: UUID,
    keyring: Keyring,
    user_id: UUID,
    *,
    code: str | None,
    recovery_code: str | None,
    now: datetime,
) -> str:
    """Check a TOTP code (once per step) or a recovery code (once). Returns the method used
    (`otp` or `recovery`); every failure is `InvalidCredentials`."""
    credential = f"totp:{user_id}"
    try:
        seed, status, last = _factor(conn, tenant_id, user_id, keyring, now=now)
    except NotFound as exc:
        raise InvalidCredentials(
            "no_factor", tenant_id=tenant_id, credential_id=credential
        ) from exc
    if status != "active":
        raise InvalidCredentials("no_factor", tenant_id=tenant_id, credential_id=credential)
    if code is not None:
        _use_step(conn, tenant_id, user_id, code=code, seed=seed, last=last, now=now)
        _passed(conn, tenant_id, user_id)
        return "otp"
    if recovery_code is not None:
        used = conn.execute(
            "UPDATE tenantguard.recovery_codes SET used_at = %s WHERE tenant_id = %s"
            " AND user_id = %s AND code_hash = %s AND used_at IS NULL RETURNING code_hash",
            (now, tenant_id, user_id, _hash(recovery_code)),
        ).fetchone()
        if used is not None:
            _passed(conn, tenant_id, user_id)
            return "recovery"
    raise InvalidCredentials("bad_totp", tenant_id=tenant_id, credential_id=credential)


DEFAULT_MFA_ROLES = ("owner", "admin")
SECOND_FACTORS = frozenset({"otp", "recovery"})


def mfa_roles(conn: Connection, tenant_id: UUID) -> tuple[str, ...]:
    """The roles that must prove a second factor (the tenant's policy, or the default)."""
    row = conn.execute(
        "SELECT roles FROM tenantguard.mfa_policies WHERE tenant_id = %s", (tenant_id,)
    ).fetchone()
    return required_roles(tenant_id, row[0] if row is not None else None)


def required_roles(tenant_id: UUID, stored: object) -> tuple[str, ...]:
    """The roles that must prove a second factor: in the platform realm always every role (its
    operators), whatever is stored; in a tenant its stored policy, or the default."""
    if tenant_id == PLATFORM_TENANT_ID:
        return PLATFORM_ROLES
    return tuple(str(r) for r in stored) if isinstance(stored, list) else DEFAULT_MFA_ROLES


def set_mfa_roles(
    conn: Connection, ctx: TenantContext, roles: list[str], *, now: datetime
) -> tuple[str, ...]:
    chosen = sorted(set(roles))
    if not set(chosen) <= set(ROLES):
        raise RequestInvalid("Unknown role.")
    from tenantguard.identity.users import require_owner  # noqa: PLC0415 (users imports us not)

    require_owner(conn, ctx, why="Only an owner changes the MFA policy.")
    conn.execute(
        "INSERT INTO tenantguard.mfa_policies (tenant_id, roles, updated_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant_id) DO UPDATE SET roles = EXCLUDED.roles,"
        " updated_at = EXCLUDED.updated_at",
        (ctx.tenant_id, chosen, now),
    )
    record_action(
        conn,
        ctx,
        action="mfa.policy",
        target_type="tenant",
        target_id=str(ctx.tenant_id),
        now=now,
        payload={"roles": chosen},
    )
    return tuple(chosen)

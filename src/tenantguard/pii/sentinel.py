"""The PII sentinel of a tenant: scan, redact (strict, reversible or flag, per its policy and
the channel), and re-identify reversible tokens, with the tenant's own keys.

- The strict token key is 256 random bits per tenant, sealed under the tenant's data key for
  that column: shredding the tenant's keys makes its tokens unlinkable for good.
- A reversible original is sealed with the conversation and token bound as associated data;
  a token re-identifies only in its own tenant and conversation, only for a caller holding
  `pii:reidentify`, and each re-identification is audited (classes and counts, never values).

Threat stopped: personal data reaching a model or a log against the tenant's policy; tokens of
one tenant or conversation opening another's originals.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from tenantguard.audit.store import record_action
from tenantguard.clock import Clock
from tenantguard.context import Principal, TenantContext
from tenantguard.crypto.fields import EncryptedColumn
from tenantguard.crypto.keyring import Keyring
from tenantguard.db.pool import ACTIVE_SCREEN, Connection, Database
from tenantguard.errors import RequestInvalid
from tenantguard.pii.channels import has_findings, redactor, remember_policy, screen_event
from tenantguard.pii.detectors import DetectorRegistry, Span
from tenantguard.pii.policy import CHANNELS, PiiPolicy, parse_policy
from tenantguard.pii.redact import Finding, apply_policy, normalise, text_bytes

TOKEN_KEY = EncryptedColumn("pii_token_keys", "sealed", ("tenant_id",))
VAULT_VALUE = EncryptedColumn("pii_vault", "sealed", ("conversation", "token"))
# `[EMAIL_REV_…]`: the uppercase marker cannot occur in a strict token's lowercase tag.
_REVERSIBLE = re.compile(r"\[[A-Z_]{2,40}_REV_[a-z2-7]{16}\]")
_SCREEN = Principal(type="system", id="pii-sentinel")


@dataclass(frozen=True, slots=True)
class Redacted:
    text: str
    findings: list[Finding]
    policy_version: int


def _channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise RequestInvalid("Unknown channel.")
    return channel


class _Vault:
    """Reversible tokens of one conversation, in one transaction."""

    def __init__(
        self, sentinel: Sentinel, tx: Connection, ctx: TenantContext, key: bytes, conversation: str
    ) -> None:
        self._s, self._tx, self._ctx, self._key = sentinel, tx, ctx, key
        self._conversation = conversation

    def token_for(self, pii_class: str, value: str) -> str:
        value_hash = hmac.new(
            self._key, text_bytes(f"{pii_class}\0{normalise(pii_class, value)}"), hashlib.sha256
        ).digest()
        row = self._tx.execute(
            "SELECT token FROM tenantguard.pii_vault WHERE tenant_id = %s AND conversation = %s"
            " AND pii_class = %s AND value_hash = %s",
            (self._ctx.tenant_id, self._conversation, pii_class, value_hash),
        ).fetchone()
        if row is not None:
            return str(row[0])
        tag = secrets.token_bytes(10)
        token = f"[{pii_class.upper()}_REV_{base64.b32encode(tag).decode().lower()}]"
        sealed = VAULT_VALUE.seal(
            self._s.keyring, self._tx, self._ctx, (self._conversation, token), text_bytes(value)
        )
        self._tx.execute(
            "INSERT INTO tenantguard.pii_vault (tenant_id, conversation, token, pii_class,"
            " value_hash, sealed, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                self._ctx.tenant_id,
                self._conversation,
                token,
                pii_class,
                value_hash,
                sealed,
                self._s.clock.now(),
            ),
        )
        return token


class Sentinel:
    def __init__(
        self, db: Database, keyring: Keyring, registry: DetectorRegistry, *, clock: Clock
    ) -> None:
        self.db, self.keyring, self.registry, self.clock = db, keyring, registry, clock

    def install(self) -> None:
        """Screen every audit event written through this sentinel's database by the tenant's
        policy for the audit channel, with the tenant's token key (pii.channels)."""
        self.db.audit_screen = self.screen_audit

    def screen_audit(
        self, conn: Connection, tenant_id: UUID, reason: str, payload: dict[str, object]
    ) -> tuple[str, dict[str, object]]:
        if not has_findings(self.registry, [reason, payload]):
            return reason, payload  # the common case: no policy or key read at all
        # A first token key seals under a data key whose creation is audited too: that nested
        # event (ids only) takes the default screen, not this one again.
        nested = ACTIVE_SCREEN.set(None)
        try:
            policy, _ = self.policy(conn, tenant_id)
            ctx = TenantContext(tenant_id, _SCREEN, frozenset(), request_id="pii-screen")
            key = self._token_key(conn, ctx)
        finally:
            ACTIVE_SCREEN.reset(nested)
        return screen_event(reason, payload, redactor(self.registry, policy, "audit", key))

    def policy(self, conn: Connection, tenant_id: UUID) -> tuple[PiiPolicy, int]:
        row = conn.execute(
            "SELECT document, version FROM tenantguard.pii_policies WHERE tenant_id = %s",
            (tenant_id,),
        ).fetchone()
        if row is None:
            policy, version = PiiPolicy(), 0
        else:
            document = json.loads(str(row[0]))
            policy = parse_policy(document, classes=self.registry.classes)
            version = int(row[1])
        remember_policy(tenant_id, policy)  # the log channel follows it in this process
        return policy, version

    def set_policy(
        self, conn: Connection, ctx: TenantContext, document: dict[str, object], *, now: datetime
    ) -> int:
        policy = parse_policy(document, classes=self.registry.classes)  # refused if invalid
        text = json.dumps(document, sort_keys=True, separators=(",", ":"))
        row = conn.execute(
            "INSERT INTO tenantguard.pii_policies (tenant_id, document, version, updated_at)"
            " VALUES (%s, %s, 1, %s) ON CONFLICT (tenant_id) DO UPDATE SET"
            " document = EXCLUDED.document, version = tenantguard.pii_policies.version + 1,"
            " updated_at = EXCLUDED.updated_at RETURNING version",
            (ctx.tenant_id, text, now),
        ).fetchone()
        version = int(row[0]) if row else 0
        record_action(
            conn,
            ctx,
            action="pii.policy",
            target_type="tenant",
            target_id=str(ctx.tenant_id),
            now=now,
            payload={"version": version, "policy": text},  # as text: audit payloads hold no floats
        )
        remember_policy(ctx.tenant_id, policy)
        return version

    def _token_key(self, conn: Connection, ctx: TenantContext) -> bytes:
        row = conn.execute(
            "SELECT sealed FROM tenantguard.pii_token_keys WHERE tenant_id = %s",
            (ctx.tenant_id,),
        ).fetchone()
        if row is not None:
            return TOKEN_KEY.open(
                self.keyring, conn, ctx.tenant_id, (ctx.tenant_id,), bytes(row[0])
            )
        key = secrets.token_bytes(32)
        sealed = TOKEN_KEY.seal(self.keyring, conn, ctx, (ctx.tenant_id,), key)
        conn.execute(
            "INSERT INTO tenantguard.pii_token_keys (tenant_id, sealed, created_at)"
            " VALUES (%s, %s, %s) ON CONFLICT (tenant_id) DO NOTHING",
            (ctx.tenant_id, sealed, self.clock.now()),
        )
        row = conn.execute(  # a concurrent first use may have won: use the stored key
            "SELECT sealed FROM tenantguard.pii_token_keys WHERE tenant_id = %s",
            (ctx.tenant_id,),
        ).fetchone()
        assert row is not None  # noqa: S101 (inserted or already there)
        return TOKEN_KEY.open(self.keyring, conn, ctx.tenant_id, (ctx.tenant_id,), bytes(row[0]))

    def scan(self, text: str, classes: list[str] | None = None) -> list[Span]:
        return self.registry.scan(text, classes)

    def redact(self, ctx: TenantContext, text: str, *, channel: str, conversation: str) -> Redacted:
        """`text` redacted by the tenant's policy for `channel`; reversible tokens are kept in
        the vault of `conversation`."""
        spans = self.registry.scan(text)
        with self.db.tenant_transaction(ctx.tenant_id) as tx:
            policy, version = self.policy(tx, ctx.tenant_id)
            key = self._token_key(tx, ctx)
            vault = _Vault(self, tx, ctx, key, conversation)
            redacted, findings = apply_policy(
                text, spans, policy, _channel(channel), token_key=key, vault=vault
            )
        return Redacted(redacted, findings, version)

    def reidentify(self, ctx: TenantContext, text: str, *, conversation: str) -> tuple[str, int]:
        """`text` with the reversible tokens of this tenant's `conversation` replaced by their
        originals; tokens of anything else stay as they are. Audited."""
        tokens = sorted(set(_REVERSIBLE.findall(text)))
        restored: dict[str, str] = {}
        with self.db.tenant_transaction(ctx.tenant_id) as tx:
            for token in tokens:
                row = tx.execute(
                    "SELECT pii_class, sealed FROM tenantguard.pii_vault WHERE tenant_id = %s"
                    " AND conversation = %s AND token = %s",
                    (ctx.tenant_id, conversation, token),
                ).fetchone()
                if row is None:
                    continue
                plain = VAULT_VALUE.open(
                    self.keyring, tx, ctx.tenant_id, (conversation, token), bytes(row[1])
                )
                restored[token] = plain.decode("utf-8", "surrogatepass")
            record_action(
                tx,
                ctx,
                action="pii.reidentify",
                target_type="conversation",
                target_id=conversation,
                now=self.clock.now(),
                payload={"tokens": len(restored), "unknown": len(tokens) - len(restored)},
            )
        for token, value in restored.items():
            text = text.replace(token, value)
        return text, len(restored)

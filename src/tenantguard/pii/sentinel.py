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
from typing import Any
from uuid import UUID

import structlog

from tenantguard.audit.store import record_action
from tenantguard.clock import Clock
from tenantguard.context import Principal, TenantContext
from tenantguard.crypto.fields import EncryptedColumn
from tenantguard.crypto.keyring import Keyring
from tenantguard.db.pool import ACTIVE_SCREEN, Connection, Database
from tenantguard.errors import DecryptionFailed, RequestInvalid
from tenantguard.pii.channels import (
    PII_MEMBER,
    AuditFields,
    has_findings,
    redactor,
    remember_policy,
    screen_event,
)
from tenantguard.pii.detectors import DetectorRegistry, Span
from tenantguard.pii.policy import CHANNELS, PiiPolicy, PolicyInvalid, parse_policy
from tenantguard.pii.redact import Finding, apply_policy, normalise, text_bytes
from tenantguard.pii.stream import StreamRedactor

TOKEN_KEY = EncryptedColumn("pii_token_keys", "sealed", ("tenant_id",))
VAULT_VALUE = EncryptedColumn("pii_vault", "sealed", ("conversation", "token"))
# `[EMAIL_REV_…]`: the uppercase marker cannot occur in a strict token's lowercase tag.
_REVERSIBLE = re.compile(r"\[[A-Z_]{2,40}_REV_[a-z2-7]{16}\]")
_SCREEN = Principal(type="system", id="pii-sentinel")
_log = structlog.get_logger("tenantguard.pii")


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


class _OwnTransactionVault:
    """A conversation's vault for a stream: each new token in a short transaction."""

    def __init__(
        self, sentinel: Sentinel, ctx: TenantContext, key: bytes, conversation: str
    ) -> None:
        self._s, self._ctx, self._key, self._conversation = sentinel, ctx, key, conversation

    def token_for(self, pii_class: str, value: str) -> str:
        with self._s.db.tenant_transaction(self._ctx.tenant_id) as tx:
            return _Vault(self._s, tx, self._ctx, self._key, self._conversation).token_for(
                pii_class, value
            )


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
        self, conn: Connection, tenant_id: UUID, fields: AuditFields, payload: dict[str, Any]
    ) -> tuple[AuditFields, dict[str, Any]]:
        body = {k: v for k, v in payload.items() if k != PII_MEMBER}  # never forged findings
        if not has_findings(self.registry, [fields, body]):
            return fields, body  # the common case: no policy or key read at all
        # A first token key seals under a data key whose creation is audited too: that nested
        # event (ids only) takes the default screen, not this one again.
        nested = ACTIVE_SCREEN.set(None)
        try:
            policy, _ = self.policy(conn, tenant_id, cache=False)
            ctx = TenantContext(tenant_id, _SCREEN, frozenset(), request_id="pii-screen")
            key = self._token_key(conn, ctx)
        finally:
            ACTIVE_SCREEN.reset(nested)
        return screen_event(fields, body, redactor(self.registry, policy, "audit", key))

    def policy(
        self, conn: Connection, tenant_id: UUID, *, cache: bool = True
    ) -> tuple[PiiPolicy, int]:
        """The tenant's policy and its version. A stored policy that no longer parses (written
        by a release with other classes) reads as the default, strict everywhere, and is
        logged: a screen never fails an unrelated action, and never weakens.

        With `cache`, the log channel of this process follows the policy read; pass False
        inside a transaction that may have changed it (it may still roll back)."""
        row = conn.execute(
            "SELECT document, version FROM tenantguard.pii_policies WHERE tenant_id = %s",
            (tenant_id,),
        ).fetchone()
        policy, version = PiiPolicy(), 0
        if row is not None:
            version = int(row[1])
            try:
                policy = parse_policy(json.loads(str(row[0])), classes=self.registry.classes)
            except PolicyInvalid:
                _log.error("pii.policy_unreadable", tenant_id=str(tenant_id), version=version)
        if cache:
            remember_policy(tenant_id, policy)
        return policy, version

    def set_policy(
        self, conn: Connection, ctx: TenantContext, document: dict[str, object], *, now: datetime
    ) -> int:
        parse_policy(document, classes=self.registry.classes)  # refused if invalid
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
        return version  # the caller remembers it for the log channel once committed

    def _token_key(self, conn: Connection, ctx: TenantContext) -> bytes:
        """The tenant's strict-token key, made on first use. After the tenant's data keys
        were destroyed (a crypto-shred) the stored key cannot be opened any more: a new one
        replaces it, so tokens made before the shred stay unlinkable to those made after,
        and redaction and audit keep working."""
        row = conn.execute(
            "SELECT sealed FROM tenantguard.pii_token_keys WHERE tenant_id = %s",
            (ctx.tenant_id,),
        ).fetchone()
        if row is not None:
            try:
                return TOKEN_KEY.open(
                    self.keyring, conn, ctx.tenant_id, (ctx.tenant_id,), bytes(row[0])
                )
            except DecryptionFailed:
                _log.warning("pii.token_key_replaced", tenant_id=str(ctx.tenant_id))
        key = secrets.token_bytes(32)
        sealed = TOKEN_KEY.seal(self.keyring, conn, ctx, (ctx.tenant_id,), key)
        if row is None:
            conn.execute(
                "INSERT INTO tenantguard.pii_token_keys (tenant_id, sealed, created_at)"
                " VALUES (%s, %s, %s) ON CONFLICT (tenant_id) DO NOTHING",
                (ctx.tenant_id, sealed, self.clock.now()),
            )
        else:  # compare and swap: a concurrent replacement wins, and is used below
            conn.execute(
                "UPDATE tenantguard.pii_token_keys SET sealed = %s, created_at = %s"
                " WHERE tenant_id = %s AND sealed = %s",
                (sealed, self.clock.now(), ctx.tenant_id, bytes(row[0])),
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

    def redact_many(
        self, ctx: TenantContext, texts: list[str], *, channel: str, conversation: str
    ) -> list[Redacted]:
        """Each of `texts` redacted as `redact` does, in one transaction (a prompt's messages)."""
        scanned = [self.registry.scan(text) for text in texts]
        out: list[Redacted] = []
        with self.db.tenant_transaction(ctx.tenant_id) as tx:
            policy, version = self.policy(tx, ctx.tenant_id)
            if not any(scanned):
                return [Redacted(text, [], version) for text in texts]
            key = self._token_key(tx, ctx)
            vault = _Vault(self, tx, ctx, key, conversation)
            for text, spans in zip(texts, scanned, strict=True):
                redacted, findings = apply_policy(
                    text, spans, policy, _channel(channel), token_key=key, vault=vault
                )
                out.append(Redacted(redacted, findings, version))
        return out

    def stream_redactor(
        self, ctx: TenantContext, *, channel: str, conversation: str
    ) -> StreamRedactor:
        """A redactor of one streamed text by the tenant's policy for `channel`. A reversible
        token it makes is stored in a transaction of its own (a stream holds none open)."""
        with self.db.tenant_transaction(ctx.tenant_id) as tx:
            policy, _ = self.policy(tx, ctx.tenant_id)
            key = self._token_key(tx, ctx)
        return StreamRedactor(
            self.registry,
            policy,
            _channel(channel),
            token_key=key,
            vault=_OwnTransactionVault(self, ctx, key, conversation),
        )

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

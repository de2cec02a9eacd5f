"""Field-level encryption: encrypting a column is a one-line decision.

    SECRET_VALUE = EncryptedColumn("secret_versions", "value", ("secret_id", "version"))

The column's purpose (`column:<table>.<column>`) and the row's key columns are bound into
every ciphertext as associated data, so a value copied to another column, row or tenant does
not open. `reencrypt` moves a column's values onto the newest key version: batch by batch, each
batch in its own transaction, skipping values already current, so it can stop at any point and
be run again (resumable, idempotent).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from psycopg import sql

from tenantguard.audit.store import record_action
from tenantguard.clock import Clock
from tenantguard.context import TenantContext
from tenantguard.crypto import aead
from tenantguard.crypto.keyring import Keyring
from tenantguard.db.pool import Connection, Database
from tenantguard.errors import DecryptionFailed


@dataclass(frozen=True, slots=True)
class EncryptedColumn:
    """A bytea column holding sealed values; `keys` are the columns that identify a row
    within its tenant."""

    table: str
    column: str
    keys: tuple[str, ...]

    @property
    def purpose(self) -> str:
        return f"column:{self.table}.{self.column}"

    def record_id(self, key_values: tuple[object, ...]) -> str:
        """An injective encoding of the row's key: ('x|y', 'z') and ('x', 'y|z') differ."""
        if len(key_values) != len(self.keys):
            raise ValueError(f"{self.table} rows are identified by {self.keys}")
        return json.dumps([str(v) for v in key_values], separators=(",", ":"))

    def seal(
        self,
        keyring: Keyring,
        conn: Connection,
        ctx: TenantContext,
        key_values: tuple[object, ...],
        value: bytes,
    ) -> bytes:
        return keyring.seal(conn, ctx, self.purpose, value, record_id=self.record_id(key_values))

    def open(
        self,
        keyring: Keyring,
        conn: Connection,
        tenant_id: UUID,
        key_values: tuple[object, ...],
        sealed: bytes,
    ) -> bytes:
        return keyring.open(
            conn, tenant_id, self.purpose, sealed, record_id=self.record_id(key_values)
        )


@dataclass(frozen=True, slots=True)
class ReencryptResult:
    examined: int
    reencrypted: int
    unopenable: int = 0  # values whose key was shredded (or that were tampered with)


def reencrypt(
    db: Database,
    keyring: Keyring,
    ctx: TenantContext,
    column: EncryptedColumn,
    *,
    clock: Clock,
    batch: int = 200,
    progress: Callable[[int], None] | None = None,
) -> ReencryptResult:
    """Re-seal every value of `column` for `ctx`'s tenant under the newest key version."""
    ident = sql.Identifier
    keys = sql.SQL(", ").join(map(ident, column.keys))
    select = sql.SQL(
        "SELECT {keys}, {col} FROM tenantguard.{table} WHERE tenant_id = %s"
        " AND {col} IS NOT NULL AND ({keys}) > ({marks}) ORDER BY {keys} LIMIT %s"
    ).format(
        keys=keys,
        col=ident(column.column),
        table=ident(column.table),
        marks=sql.SQL(", ").join(sql.Placeholder() * len(column.keys)),
    )
    first = sql.SQL(
        "SELECT {keys}, {col} FROM tenantguard.{table} WHERE tenant_id = %s"
        " AND {col} IS NOT NULL ORDER BY {keys} LIMIT %s"
    ).format(keys=keys, col=ident(column.column), table=ident(column.table))
    update = sql.SQL(
        "UPDATE tenantguard.{table} SET {col} = %s WHERE tenant_id = %s AND ({keys}) = ({marks})"
        " AND {col} = %s"
    ).format(
        table=ident(column.table),
        col=ident(column.column),
        keys=keys,
        marks=sql.SQL(", ").join(sql.Placeholder() * len(column.keys)),
    )
    examined = reencrypted = unopenable = 0
    after: tuple[object, ...] | None = None
    while True:
        with db.tenant_transaction(ctx.tenant_id) as tx:
            if after is None:
                rows = tx.execute(first, (ctx.tenant_id, batch)).fetchall()
            else:
                rows = tx.execute(select, (ctx.tenant_id, *after, batch)).fetchall()
            status = keyring.status(tx, ctx.tenant_id)
            newest = max(
                (v.version for v in status.versions if v.purpose == column.purpose and v.active),
                default=None,
            )
            moved = skipped = 0
            for row in rows:
                key_values, sealed = tuple(row[:-1]), bytes(row[-1])
                try:
                    if newest is None or aead.key_version_of(sealed) >= newest:
                        continue
                    plain = column.open(keyring, tx, ctx.tenant_id, key_values, sealed)
                except DecryptionFailed:
                    skipped += 1  # nothing can open it (shredded or tampered): skip, go on
                    continue
                fresh = column.seal(keyring, tx, ctx, key_values, plain)
                written = tx.execute(update, (fresh, ctx.tenant_id, *key_values, sealed))
                moved += written.rowcount  # 0 if the value changed since it was read
            if moved or skipped:
                record_action(
                    tx,
                    ctx,
                    action="data_key.reencrypt",
                    target_type="column",
                    target_id=column.purpose,
                    now=clock.now(),
                    payload={"rows": moved, "unopenable": skipped, "to_version": newest},
                )
        examined += len(rows)
        reencrypted += moved
        unopenable += skipped
        if progress is not None:
            progress(len(rows))
        if len(rows) < batch:
            return ReencryptResult(examined, reencrypted, unopenable)
        after = tuple(rows[-1][:-1])

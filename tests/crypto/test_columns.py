"""Every bytea column is either a registered sealed column or declared not sealed, with a
reason: a new column cannot silently hold plaintext secrets, or miss re-encryption."""

from __future__ import annotations

from tenantguard.data.columns import ENCRYPTED_COLUMNS, NOT_SEALED
from tenantguard.db import Database


def test_every_bytea_column_is_accounted_for(db: Database) -> None:
    with db.system_transaction() as tx:
        rows = tx.execute(
            "SELECT table_name || '.' || column_name FROM information_schema.columns"
            " WHERE table_schema = 'tenantguard' AND data_type = 'bytea' ORDER BY 1"
        ).fetchall()
    found = {str(r[0]) for r in rows}
    sealed = {f"{c.table}.{c.column}" for c in ENCRYPTED_COLUMNS}
    assert found == sealed | set(NOT_SEALED)
    assert not sealed & set(NOT_SEALED)

"""Keyset pagination with opaque cursors over `(created_at, id)`.

A cursor only says where a listing stopped; it carries no tenant. A cursor taken from another
tenant's listing positions a query that RLS still scopes to the caller's rows.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from uuid import UUID

from tenantguard.errors import RequestInvalid

MAX_PAGE = 200


def encode_cursor(created_at: datetime, row_id: UUID) -> str:
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, UUID] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, row_id = raw.split("|")
        parsed, parsed_id = datetime.fromisoformat(moment), UUID(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise RequestInvalid("The cursor is not valid.") from exc
    if parsed.tzinfo is None:
        raise RequestInvalid("The cursor is not valid.")
    return parsed, parsed_id

"""Idempotency keys, the pure core: what a key may look like, what makes two requests the
same, and what a request finds when its key was seen before.

A side-effecting request (`POST`, `PATCH`) that carries `Idempotency-Key: <key>` claims the
key for its tenant and principal before its handler runs. What it then finds decides:

    nothing (or an expired record)        -> it runs, and its answer is kept (`Claim`)
    the same request, answered            -> that answer, replayed (`Stored`)
    a different request under the key     -> 422 `idempotency_key_reused`
    the same request, still running       -> 409 `idempotency_in_progress`, `Retry-After: 1`
    the same request, which never finished -> 409 `idempotency_interrupted`: its effects, if
                                               any, stand; it is never run a second time

"The same request" is the same method, path, query, content type, body bytes and
`X-Tenantguard-*` headers (`fingerprint`). An answer of 429 or 5xx is not kept: the key is
released, and a retry runs (those answers leave no effect: a refusal rolls its transaction
back). Keys are scoped per tenant and per principal: another person or key of the
same tenant using the same key makes a request of its own, and never sees the first one's
answer (which may hold a secret shown once).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tenantguard.errors import Conflict, RequestInvalid

HEADER = "idempotency-key"
REPLAYED_HEADER = "idempotent-replayed"
METHODS = frozenset({"POST", "PATCH"})  # the methods HTTP does not make idempotent
GATEWAY_HEADERS = b"x-tenantguard-"  # headers that change what a request means
# Visible ASCII, 1 to 255 characters: a UUID, a ULID, a client's own job id.
_KEY = re.compile(r"[!-~]{1,255}")
# How long a claim may stay unanswered before it is taken for interrupted: longer than any
# request the gateway serves (a model call's deadline is minutes, not tens of them).
LEASE = timedelta(minutes=15)
DEFAULT_RETENTION = timedelta(hours=24)
# The answers that are kept: their headers that matter to a client (the request id is the
# replay's own), and their bodies up to this size (beyond it: interrupted, never run again).
KEPT_HEADERS = frozenset(
    {"content-type", "location", "cache-control", "retry-after", "www-authenticate"}
)
MAX_KEPT_BYTES = 4 * 1_048_576


class IdempotencyKeyInvalid(RequestInvalid):
    code = "idempotency_key_invalid"
    title = "Idempotency key invalid"
    default_detail = "An Idempotency-Key is 1 to 255 visible ASCII characters, sent once."


class IdempotencyKeyReused(RequestInvalid):
    code = "idempotency_key_reused"
    title = "Idempotency key reused"
    default_detail = "This Idempotency-Key was used for a different request; use a new key."


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"
    title = "Request in progress"
    default_detail = "A request with this Idempotency-Key is still being processed; retry."

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class IdempotencyInterrupted(Conflict):
    code = "idempotency_interrupted"
    title = "Request interrupted"
    default_detail = (
        "The first request with this Idempotency-Key ended without an answer that can be"
        " replayed; its effects, if any, stand. Check the resource, then use a new key."
    )


def parse_key(values: list[str]) -> str | None:
    """The request's key, from all its `Idempotency-Key` header values (None: no header)."""
    if not values:
        return None
    if len(values) != 1 or not _KEY.fullmatch(values[0]):
        raise IdempotencyKeyInvalid()
    return values[0]


def fingerprint(
    method: str,
    path: str,
    query: bytes,
    content_type: bytes,
    body: bytes,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """A SHA-256 of what makes a request the request it is: its method, path, query, content
    type, body, and the gateway's own headers (`X-Tenantguard-*`: the run a model call counts
    against), each part length-prefixed, so no two different requests share an encoding."""
    digest = hashlib.sha256(b"tenantguard.idempotency.v1")
    ours = sorted((n.lower(), v) for n, v in headers if n.lower().startswith(GATEWAY_HEADERS))
    parts = [method.encode("ascii"), path.encode("utf-8"), query, content_type, body]
    for name, value in ours:
        parts += [name, value]
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


@dataclass(frozen=True, slots=True)
class Pending:
    """A request that carries a key, before its tenant is known (set by the middleware)."""

    key: str
    fingerprint: bytes
    method: str
    path: str


@dataclass(frozen=True, slots=True)
class Stored:
    """An answer kept for replay."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class Found:
    """What a key's record holds when a request claims it."""

    fingerprint: bytes
    state: str  # in_progress | done | interrupted
    lease_until: datetime
    answered: bool  # done, with an answer to replay


def decide(found: Found, fingerprint: bytes, now: datetime) -> None:
    """Raise what a request finds under a live record, or return if it may replay the answer.

    The fingerprint is compared first: a different request never learns the state of another.
    """
    if found.fingerprint != fingerprint:
        raise IdempotencyKeyReused()
    if found.state == "done" and found.answered:
        return
    if found.state == "in_progress" and now < found.lease_until:
        raise IdempotencyInProgress()
    raise IdempotencyInterrupted()


def kept_headers(raw: list[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    """The headers of an answer that a replay repeats."""
    return tuple(
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in raw
        if name.decode("latin-1").lower() in KEPT_HEADERS
    )

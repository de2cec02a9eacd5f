"""Where quota state lives, behind one port: `consume` applies `core.decide` to a tenant's
counters atomically, all of a consumption's limits or none.

- `PostgresQuotaStore` (the default): the counters are rows of the tenant's (RLS), locked in
  key order for the decision, so concurrent consumptions queue and never deadlock.
- `RedisQuotaStore` (many gateway replicas): one Lua script does the same arithmetic in one
  atomic step; a tenant's keys share one hash tag, so a cluster keeps them on one slot.
- `MemoryQuotaStore` (in `tenantguard.testing`): the same, under a lock, for users' tests.

Every store fails closed: a store that cannot be reached raises `QuotaStoreUnavailable`, and
the request is refused, never let through uncounted. The time is the caller's (an injected
clock): replicas must keep their clocks in step, as they already must for tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from pydantic import SecretStr

from tenantguard.errors import ConfigurationError, ServiceUnavailable
from tenantguard.quotas.core import MAX_COST, Check, Verdict, decide

if TYPE_CHECKING:
    from tenantguard.db.pool import Connection, Database


class QuotaStoreUnavailable(ServiceUnavailable):
    code = "quota_store_unavailable"
    title = "Quota store unavailable"
    default_detail = "Quotas cannot be checked right now, so the request was not let through."


class QuotaStore(Protocol):
    def consume(
        self,
        tenant_id: UUID,
        checks: Sequence[Check],
        *,
        cost: int,
        now: int,
        force: bool = False,
        conn: Connection | None = None,
    ) -> Verdict:
        """`conn`: the caller's open transaction of `tenant_id`, for a store that lives in the
        database (the count then commits or rolls back with the caller's work, and a request
        never waits for a second pooled connection while holding one). Others ignore it."""
        ...

    def usage(self, tenant_id: UUID, keys: Sequence[str]) -> dict[str, int]: ...


def _datetime(at: int) -> datetime:
    return datetime.fromtimestamp(at / 1_000_000, tz=UTC)


class PostgresQuotaStore:
    """Counters in `tenantguard.quota_state`, one row per (tenant, key)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def consume(
        self,
        tenant_id: UUID,
        checks: Sequence[Check],
        *,
        cost: int,
        now: int,
        force: bool = False,
        conn: Connection | None = None,
    ) -> Verdict:
        if not checks:
            return Verdict(True)
        if conn is not None:
            return self._consume(conn, tenant_id, checks, cost=cost, now=now, force=force)
        # Rates only: a crash may forget the last few milliseconds of counts (a rate forgets
        # by itself within its period anyway), so this commit need not wait for the disk.
        # Windows and budgets are charged durably.
        durable = not all(c.limit.is_rate for c in checks)
        with self._db.tenant_transaction(tenant_id, durable=durable) as tx:
            return self._consume(tx, tenant_id, checks, cost=cost, now=now, force=force)

    @staticmethod
    def _consume(
        tx: Connection,
        tenant_id: UUID,
        checks: Sequence[Check],
        *,
        cost: int,
        now: int,
        force: bool,
    ) -> Verdict:
        keys = [c.key for c in checks]  # sorted by checks_for: the lock order
        if cost == 0 and not force:  # a probe charges nothing: a plain read, no lock, no write
            rows = tx.execute(
                "SELECT key, value FROM tenantguard.quota_state"
                " WHERE tenant_id = %s AND key = ANY(%s)",
                (tenant_id, keys),
            ).fetchall()
            return decide(checks, dict(rows), cost=0, now=now)[0]
        expires = [None if c.expires is None else _datetime(c.expires) for c in checks]
        # One statement makes the missing rows and locks them all, in key order.
        rows = tx.execute(
            "INSERT INTO tenantguard.quota_state AS q (tenant_id, key, value, expires_at)"
            " SELECT %s, u.k, 0, u.e FROM unnest(%s::text[], %s::timestamptz[])"
            " WITH ORDINALITY AS u(k, e, n) ORDER BY u.n"
            " ON CONFLICT (tenant_id, key) DO UPDATE SET value = q.value RETURNING key, value",
            (tenant_id, keys, expires),
        ).fetchall()
        verdict, new = decide(checks, dict(rows), cost=cost, now=now, force=force)
        if new:
            tx.execute(
                "UPDATE tenantguard.quota_state AS q SET value = u.v"
                " FROM unnest(%s::text[], %s::bigint[]) AS u(k, v)"
                " WHERE q.tenant_id = %s AND q.key = u.k",
                (list(new), list(new.values()), tenant_id),
            )
        return verdict

    def usage(self, tenant_id: UUID, keys: Sequence[str]) -> dict[str, int]:
        with self._db.tenant_transaction(tenant_id) as tx:
            rows = tx.execute(
                "SELECT key, value FROM tenantguard.quota_state"
                " WHERE tenant_id = %s AND key = ANY(%s)",
                (tenant_id, list(keys)),
            ).fetchall()
        return dict(rows)


# KEYS: the state keys, in order. ARGV: now, cost, force, then five values per key: kind
# ("r" rate, "w" window or run), interval, tolerance, limit, expiry (0: none). Numbers are
# Lua doubles: exact below 2^53, which bounds every value here (microseconds since 1970 are
# about 2^51; a rate's TAT is clamped at now + 2^40; costs are at most MAX_COST).
# Returns {1, exhausted index...} or {0, refusing index, wait (-1: never: the cost is more
# than the limit holds, or a run's budget)}.
_LUA = """
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local force = ARGV[3] == '1'
local need = math.max(cost, 1)
local cap = 1099511627776
local new = {}
local exhausted = {}
for i, key in ipairs(KEYS) do
  local at = 4 + (i - 1) * 5
  local kind = ARGV[at]
  local interval = tonumber(ARGV[at + 1])
  local tolerance = tonumber(ARGV[at + 2])
  local limit = tonumber(ARGV[at + 3])
  local expires = tonumber(ARGV[at + 4])
  local state = tonumber(redis.call('GET', key) or '0')
  local never = need > limit
  if kind == 'r' then
    local base = math.max(state, now)
    local reach = math.min(base + interval * need, now + cap)
    if reach - now > tolerance and not force then
      if never then return {0, i, -1} end
      return {0, i, math.max(reach - tolerance - now, 1)}
    end
    new[i] = math.min(base + interval * cost, now + cap)
  else
    if state + need > limit and not force then
      if expires > 0 and not never then return {0, i, math.max(expires - now, 1)} end
      return {0, i, -1}
    end
    new[i] = math.min(state + cost, 4503599627370496)
    if new[i] >= limit then table.insert(exhausted, i) end
  end
end
local out = {1}
for i, key in ipairs(KEYS) do
  local at = 4 + (i - 1) * 5
  local expires = tonumber(ARGV[at + 4])
  redis.call('SET', key, string.format('%.0f', new[i]))
  if ARGV[at] == 'r' then
    redis.call('PEXPIRE', key, math.floor((new[i] - now) / 1000) + 1)
  elseif expires > 0 then
    redis.call('PEXPIRE', key, math.floor((expires - now) / 1000) + 3600000)
  end
end
for _, i in ipairs(exhausted) do table.insert(out, i) end
return out
"""


class RedisQuotaStore:
    """Counters as Redis strings `tg:q:{<tenant>}:<key>`, changed by one Lua script.

    `client` is a `redis.Redis` (sync; the gateway's handlers run in threads). A rate's key
    expires at its TAT (a fresh counter is the same state), a window's an hour after the
    window ends; a run's budget does not expire (a run has no end time here). Expiries are
    durations from the caller's now, so Redis's own clock never decides a count.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._script = client.register_script(_LUA)

    @staticmethod
    def key(tenant_id: UUID, key: str) -> str:
        return f"tg:q:{{{tenant_id}}}:{key}"

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        from redis.exceptions import RedisError  # noqa: PLC0415 (only with this store)

        try:
            yield
        except RedisError as exc:
            raise QuotaStoreUnavailable() from exc

    def consume(
        self,
        tenant_id: UUID,
        checks: Sequence[Check],
        *,
        cost: int,
        now: int,
        force: bool = False,
        conn: Connection | None = None,
    ) -> Verdict:
        del conn  # counters live in Redis, apart from the caller's transaction
        if not checks:
            return Verdict(True)
        if not 0 <= cost <= MAX_COST:
            raise ValueError("a cost is from 0 to MAX_COST")
        argv: list[Any] = [now, cost, "1" if force else "0"]
        for c in checks:
            kind = "r" if c.limit.is_rate else "w"
            argv += [kind, c.interval, c.tolerance, c.limit.limit, c.expires or 0]
        with self._reachable():
            answer = self._script(keys=[self.key(tenant_id, c.key) for c in checks], args=argv)
        if int(answer[0]) == 1:
            return Verdict(True, exhausted=tuple(checks[int(i) - 1] for i in answer[1:]))
        wait = int(answer[2])
        return Verdict(False, checks[int(answer[1]) - 1], None if wait < 0 else wait)

    def usage(self, tenant_id: UUID, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        with self._reachable():
            values = self._client.mget([self.key(tenant_id, k) for k in keys])
        return {k: int(v) for k, v in zip(keys, values, strict=True) if v is not None}


def open_store(kind: str, redis_url: SecretStr | None, db: Database) -> tuple[QuotaStore, Any]:
    """The configured store and what closes it. A Redis store must answer now: a gateway
    that cannot count does not start."""
    if kind == "postgres":
        return PostgresQuotaStore(db), lambda: None
    if kind != "redis" or redis_url is None:
        raise ConfigurationError("quota_store=redis needs redis_url.")
    import redis  # noqa: PLC0415 (only with this store)

    client = redis.Redis.from_url(
        redis_url.get_secret_value(), socket_timeout=2, socket_connect_timeout=2
    )
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        client.close()
        raise QuotaStoreUnavailable("The Redis quota store does not answer.") from exc
    return RedisQuotaStore(client), client.close

"""The quota stores under test: PostgreSQL (both backends), a real Redis server, and the
in-memory reference. Redis is at TENANTGUARD_TEST_REDIS_URL (scripts/test starts one on
127.0.0.1:6379 when none answers); a missing server fails these tests, never skips them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from tenantguard.db import Database
from tenantguard.quotas.stores import PostgresQuotaStore, QuotaStore, RedisQuotaStore
from tenantguard.testing import MemoryQuotaStore

REDIS_URL = os.environ.get("TENANTGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    client.ping()
    yield client
    client.close()


@pytest.fixture(params=["postgres", "redis", "memory"])
def store(request: pytest.FixtureRequest, db: Database, redis_client: redis.Redis) -> QuotaStore:
    if request.param == "postgres":
        return PostgresQuotaStore(db)
    if request.param == "redis":
        return RedisQuotaStore(redis_client)
    return MemoryQuotaStore()

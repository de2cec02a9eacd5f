-- 0029: idempotency keys. A side-effecting request (POST, PATCH) sent with an
-- `Idempotency-Key` claims (tenant, principal, key) before its handler runs; the answer it got
-- is kept, its body sealed under the tenant's key, until the retention window ends, and a
-- repeat of the same request is answered from it. The fingerprint (a SHA-256 of the method,
-- path, query, content type and body) tells a repeat from a different request under the same
-- key. A claim whose request never finished keeps its lease: after it, the key answers that
-- the outcome is unknown, it is never run a second time.

CREATE TABLE tenantguard.idempotency_keys (
    tenant_id     uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    principal     text        NOT NULL CHECK (length(principal) BETWEEN 1 AND 200),
    key           text        NOT NULL CHECK (key ~ '^[!-~]{1,255}$'),
    id            uuid        NOT NULL,
    fingerprint   bytea       NOT NULL CHECK (length(fingerprint) = 32),
    method        text        NOT NULL CHECK (method IN ('POST', 'PATCH')),
    path          text        NOT NULL CHECK (length(path) <= 2000),
    state         text        NOT NULL CHECK (state IN ('in_progress', 'done', 'interrupted')),
    created_at    timestamptz NOT NULL,
    lease_until   timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    status        integer     CHECK (status BETWEEN 100 AND 599),
    headers       jsonb,
    response_body bytea,
    PRIMARY KEY (tenant_id, principal, key),
    UNIQUE (tenant_id, id),
    CHECK ((state = 'done') = (status IS NOT NULL AND headers IS NOT NULL
                               AND response_body IS NOT NULL))
);
CREATE INDEX idempotency_keys_expiry ON tenantguard.idempotency_keys (tenant_id, expires_at);
ALTER TABLE tenantguard.idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.idempotency_keys FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON tenantguard.idempotency_keys TO tenantguard_app;

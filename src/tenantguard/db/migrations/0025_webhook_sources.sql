-- 0025: inbound webhooks. A tenant configures a source (a scheme, Standard Webhooks or
-- Stripe's, and the vault secret that signs it); what a source sends and verifies is kept as
-- a receipt, its body sealed under the tenant's key. The receipt's replay key (the message's
-- id, or a digest of Stripe's signed content) is unique per source: a replay is refused.

CREATE TABLE tenantguard.webhook_sources (
    tenant_id   uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    name        text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    scheme      text        NOT NULL CHECK (scheme IN ('standard', 'stripe')),
    secret_name text        NOT NULL CHECK (length(secret_name) <= 128),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE tenantguard.webhook_receipts (
    tenant_id   uuid        NOT NULL,
    source      text        NOT NULL,
    replay_key  text        NOT NULL CHECK (length(replay_key) BETWEEN 1 AND 300),
    id          uuid        NOT NULL,
    signed_at   timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    body        bytea       NOT NULL,
    body_sha256 text        NOT NULL CHECK (body_sha256 ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (tenant_id, source, replay_key),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, source) REFERENCES tenantguard.webhook_sources (tenant_id, name)
        ON DELETE CASCADE
);
CREATE INDEX webhook_receipts_by_time ON tenantguard.webhook_receipts
    (tenant_id, source, received_at DESC);
ALTER TABLE tenantguard.webhook_sources ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.webhook_sources FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.webhook_sources FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
ALTER TABLE tenantguard.webhook_receipts ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.webhook_receipts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.webhook_receipts FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON tenantguard.webhook_sources TO tenantguard_app;
GRANT SELECT, INSERT ON tenantguard.webhook_receipts TO tenantguard_app;

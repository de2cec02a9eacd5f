-- 0004: the platform's signing keys (Ed25519), for tokens, checkpoints, evidence packs and
-- signed URLs. They live in the platform realm's rows; the private half is sealed under the
-- platform's data key (purpose signing:ed25519), the public half is public.

CREATE TABLE tenantguard.signing_keys (
    tenant_id       uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    kid             text        NOT NULL CHECK (kid ~ '^[A-Za-z0-9_-]{43}$'),
    algorithm       text        NOT NULL CHECK (algorithm = 'Ed25519'),
    public_key      bytea       NOT NULL CHECK (length(public_key) = 32),
    private_sealed  bytea       NOT NULL,
    created_at      timestamptz NOT NULL,
    -- Signs from created_at until superseded; verifies until verify_until (the overlap).
    superseded_at   timestamptz,
    verify_until    timestamptz,
    PRIMARY KEY (tenant_id, kid)
);
CREATE UNIQUE INDEX signing_keys_one_active ON tenantguard.signing_keys (tenant_id)
    WHERE superseded_at IS NULL;
ALTER TABLE tenantguard.signing_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.signing_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.signing_keys FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.signing_keys TO tenantguard_app;

-- 0009: TOTP second factors (RFC 6238). The seed is a sealed column; the last step used is
-- kept so that a code cannot be used twice; recovery codes are stored as SHA-256 only.

CREATE TABLE tenantguard.totp_factors (
    tenant_id     uuid        NOT NULL,
    user_id       uuid        NOT NULL,
    seed          bytea       NOT NULL,
    status        text        NOT NULL CHECK (status IN ('pending', 'active')),
    last_step     bigint      NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL,
    confirmed_at  timestamptz,
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES tenantguard.users (tenant_id, id)
);
ALTER TABLE tenantguard.totp_factors ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.totp_factors FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.totp_factors FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON tenantguard.totp_factors TO tenantguard_app;

CREATE TABLE tenantguard.recovery_codes (
    tenant_id   uuid        NOT NULL,
    user_id     uuid        NOT NULL,
    code_hash   bytea       NOT NULL CHECK (length(code_hash) = 32),
    created_at  timestamptz NOT NULL,
    used_at     timestamptz,
    PRIMARY KEY (tenant_id, user_id, code_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES tenantguard.users (tenant_id, id)
);
ALTER TABLE tenantguard.recovery_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.recovery_codes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.recovery_codes FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON tenantguard.recovery_codes TO tenantguard_app;

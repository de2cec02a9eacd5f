-- 0007: magic-link sign-in. A link's token is stored as SHA-256 only, bound to its tenant and
-- user, single-use, and short-lived.

CREATE TABLE tenantguard.magic_links (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL,
    user_id     uuid        NOT NULL,
    token_hash  bytea       NOT NULL CHECK (length(token_hash) = 32),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES tenantguard.users (tenant_id, id)
);
ALTER TABLE tenantguard.magic_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.magic_links FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.magic_links FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.magic_links TO tenantguard_app;

-- 0003: the tenant vault. Per-tenant secrets with version history; values are sealed with the
-- tenant's data keys (column:secret_versions.value) and never returned by any API.

CREATE TABLE tenantguard.secrets (
    tenant_id        uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    id               uuid        NOT NULL,
    name             text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
    current_version  integer     NOT NULL CHECK (current_version >= 1),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    last_used_at     timestamptz,
    deleted_at       timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX secrets_live_name ON tenantguard.secrets (tenant_id, name)
    WHERE deleted_at IS NULL;
ALTER TABLE tenantguard.secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.secrets FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.secrets TO tenantguard_app;

-- `value` is NULL once the secret is deleted: deletion wipes every version's ciphertext.
CREATE TABLE tenantguard.secret_versions (
    tenant_id   uuid        NOT NULL,
    secret_id   uuid        NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    value       bytea,
    created_at  timestamptz NOT NULL,
    created_by  text        NOT NULL,
    PRIMARY KEY (tenant_id, secret_id, version),
    FOREIGN KEY (tenant_id, secret_id) REFERENCES tenantguard.secrets (tenant_id, id)
);
ALTER TABLE tenantguard.secret_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.secret_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.secret_versions FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.secret_versions TO tenantguard_app;

-- 0005: model providers, bring your own key. A tenant's providers name a vault secret that
-- holds the key. Shared providers live in the platform realm's rows and reach a tenant only
-- through an explicit grant, recorded in that tenant's rows.

CREATE TABLE tenantguard.model_providers (
    tenant_id    uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    id           uuid        NOT NULL,
    name         text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    kind         text        NOT NULL CHECK (kind IN ('openai', 'anthropic', 'mistral', 'ollama',
                                                      'vllm', 'openai_compatible')),
    base_url     text        NOT NULL CHECK (length(base_url) <= 2048),
    secret_name  text,
    models       text[]      NOT NULL CHECK (cardinality(models) BETWEEN 1 AND 200),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    deleted_at   timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX model_providers_live_name ON tenantguard.model_providers (tenant_id, name)
    WHERE deleted_at IS NULL;
ALTER TABLE tenantguard.model_providers ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.model_providers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.model_providers FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.model_providers TO tenantguard_app;

CREATE TABLE tenantguard.model_provider_grants (
    tenant_id        uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    shared_provider  text        NOT NULL,
    granted_at       timestamptz NOT NULL,
    granted_by       text        NOT NULL,
    reason           text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    revoked_at       timestamptz,
    PRIMARY KEY (tenant_id, shared_provider, granted_at)
);
CREATE UNIQUE INDEX model_provider_grants_live ON tenantguard.model_provider_grants
    (tenant_id, shared_provider) WHERE revoked_at IS NULL;
ALTER TABLE tenantguard.model_provider_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.model_provider_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.model_provider_grants FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.model_provider_grants TO tenantguard_app;

-- 0019: the PII sentinel's state per tenant: its policy (modes per class and channel), the
-- key of its strict tokens (sealed), and the reversible vault: each original sealed under the
-- tenant's key with the conversation and token bound as associated data, found again by a
-- keyed hash of its normalised value so one value keeps one token within a conversation.

CREATE TABLE tenantguard.pii_policies (
    tenant_id   uuid        NOT NULL PRIMARY KEY REFERENCES tenantguard.tenants (tenant_id),
    document    text        NOT NULL CHECK (length(document) <= 65536),
    version     integer     NOT NULL CHECK (version >= 1),
    updated_at  timestamptz NOT NULL
);
CREATE TABLE tenantguard.pii_token_keys (
    tenant_id   uuid        NOT NULL PRIMARY KEY REFERENCES tenantguard.tenants (tenant_id),
    sealed      bytea       NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE TABLE tenantguard.pii_vault (
    tenant_id     uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    conversation  text        NOT NULL CHECK (length(conversation) BETWEEN 1 AND 200),
    token         text        NOT NULL CHECK (length(token) <= 100),
    pii_class     text        NOT NULL,
    value_hash    bytea       NOT NULL CHECK (length(value_hash) = 32),
    sealed        bytea       NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, conversation, token),
    UNIQUE (tenant_id, conversation, pii_class, value_hash)
);
ALTER TABLE tenantguard.pii_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.pii_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.pii_policies FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
ALTER TABLE tenantguard.pii_token_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.pii_token_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.pii_token_keys FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
ALTER TABLE tenantguard.pii_vault ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.pii_vault FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.pii_vault FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.pii_policies TO tenantguard_app;
GRANT SELECT, INSERT, UPDATE ON tenantguard.pii_token_keys TO tenantguard_app;  -- UPDATE: re-encryption
GRANT SELECT, INSERT, UPDATE ON tenantguard.pii_vault TO tenantguard_app;  -- UPDATE: re-encryption

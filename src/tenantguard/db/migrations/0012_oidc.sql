-- 0012: OpenID Connect single sign-on per tenant. The configuration names the provider, the
-- client, the redirect URIs a login may return to, the email domains that map to this tenant,
-- and whether unknown users are provisioned. Each login in flight keeps its state (hashed),
-- nonce and PKCE verifier for ten minutes, single-use.

CREATE TABLE tenantguard.oidc_configs (
    tenant_id           uuid        NOT NULL PRIMARY KEY REFERENCES tenantguard.tenants (tenant_id),
    issuer              text        NOT NULL CHECK (length(issuer) <= 2048),
    client_id           text        NOT NULL CHECK (length(client_id) BETWEEN 1 AND 500),
    client_secret_name  text,
    redirect_uris       text[]      NOT NULL CHECK (cardinality(redirect_uris) BETWEEN 1 AND 20),
    allowed_domains     text[]      NOT NULL CHECK (cardinality(allowed_domains) BETWEEN 1 AND 50),
    jit_provisioning    boolean     NOT NULL,
    default_role        text        NOT NULL CHECK (default_role IN ('admin', 'member', 'auditor')),
    updated_at          timestamptz NOT NULL
);
ALTER TABLE tenantguard.oidc_configs ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.oidc_configs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.oidc_configs FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.oidc_configs TO tenantguard_app;

CREATE TABLE tenantguard.oidc_logins (
    tenant_id      uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    state_hash     bytea       NOT NULL CHECK (length(state_hash) = 32),
    nonce          text        NOT NULL,
    code_verifier  text        NOT NULL,
    redirect_uri   text        NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    PRIMARY KEY (tenant_id, state_hash)
);
ALTER TABLE tenantguard.oidc_logins ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.oidc_logins FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.oidc_logins FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.oidc_logins TO tenantguard_app;

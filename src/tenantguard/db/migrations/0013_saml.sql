-- 0013: SAML 2.0 single sign-on per tenant. The configuration holds the IdP's metadata (its
-- entity id, sign-on endpoint and signing certificate), the assertion consumer service URLs
-- the tenant's app receives responses at, the email domains that map to this tenant, and
-- whether unknown users are provisioned. Each login in flight keeps its RelayState (hashed),
-- its AuthnRequest id and its ACS URL for ten minutes, single-use. Accepted assertion ids are
-- kept so that a replayed assertion is refused.

CREATE TABLE tenantguard.saml_configs (
    tenant_id         uuid        NOT NULL PRIMARY KEY REFERENCES tenantguard.tenants (tenant_id),
    idp_metadata      text        NOT NULL CHECK (length(idp_metadata) <= 262144),
    idp_entity_id     text        NOT NULL CHECK (length(idp_entity_id) BETWEEN 1 AND 1024),
    acs_urls          text[]      NOT NULL CHECK (cardinality(acs_urls) BETWEEN 1 AND 20),
    allowed_domains   text[]      NOT NULL CHECK (cardinality(allowed_domains) BETWEEN 1 AND 50),
    jit_provisioning  boolean     NOT NULL,
    default_role      text        NOT NULL CHECK (default_role IN ('admin', 'member', 'auditor')),
    updated_at        timestamptz NOT NULL
);
ALTER TABLE tenantguard.saml_configs ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.saml_configs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.saml_configs FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.saml_configs TO tenantguard_app;

CREATE TABLE tenantguard.saml_logins (
    tenant_id   uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    relay_hash  bytea       NOT NULL CHECK (length(relay_hash) = 32),
    request_id  text        NOT NULL CHECK (length(request_id) BETWEEN 1 AND 256),
    acs_url     text        NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    PRIMARY KEY (tenant_id, relay_hash)
);
ALTER TABLE tenantguard.saml_logins ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.saml_logins FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.saml_logins FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.saml_logins TO tenantguard_app;

CREATE TABLE tenantguard.saml_assertions (
    tenant_id     uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    assertion_id  text        NOT NULL CHECK (length(assertion_id) BETWEEN 1 AND 256),
    accepted_at   timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, assertion_id)
);
ALTER TABLE tenantguard.saml_assertions ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.saml_assertions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.saml_assertions FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT ON tenantguard.saml_assertions TO tenantguard_app;

-- 0021: each tenant's egress: the host lists its admins set (they can only narrow what the
-- guard allows), and grants of private networks (a tenant's own Ollama or vLLM server),
-- issued from the host by the platform's operator, with a reason, revocable, audited.

CREATE TABLE tenantguard.egress_policies (
    tenant_id   uuid        NOT NULL PRIMARY KEY REFERENCES tenantguard.tenants (tenant_id),
    allow_hosts jsonb       NOT NULL,
    deny_hosts  jsonb       NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    updated_at  timestamptz NOT NULL
);
CREATE TABLE tenantguard.egress_grants (
    tenant_id   uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    id          uuid        NOT NULL,
    network     text        NOT NULL CHECK (length(network) <= 64),
    ports       integer[]   NOT NULL CHECK (cardinality(ports) BETWEEN 1 AND 64),
    reason      text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    granted_by  text        NOT NULL,
    granted_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
ALTER TABLE tenantguard.egress_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.egress_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.egress_policies FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
ALTER TABLE tenantguard.egress_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.egress_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.egress_grants FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.egress_policies TO tenantguard_app;
GRANT SELECT, INSERT, UPDATE ON tenantguard.egress_grants TO tenantguard_app;

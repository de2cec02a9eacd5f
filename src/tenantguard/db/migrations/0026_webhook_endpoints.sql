-- 0026: outbound webhooks' endpoints. A tenant registers a URL and the event types it wants;
-- each endpoint has signing secrets (sealed under the tenant's key), one current and, after a
-- rotation, the previous one until its overlap ends: deliveries are signed with every secret
-- not yet retired, so a receiver switches whenever it likes within the overlap.

CREATE TABLE tenantguard.webhook_endpoints (
    tenant_id   uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    id          uuid        NOT NULL,
    url         text        NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    event_types text[]      NOT NULL CHECK (cardinality(event_types) BETWEEN 1 AND 64),
    description text        NOT NULL CHECK (length(description) <= 256),
    created_at  timestamptz NOT NULL,
    deleted_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE tenantguard.webhook_endpoint_secrets (
    tenant_id   uuid        NOT NULL,
    endpoint_id uuid        NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    secret      bytea       NOT NULL,
    created_at  timestamptz NOT NULL,
    retires_at  timestamptz,
    PRIMARY KEY (tenant_id, endpoint_id, version),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES tenantguard.webhook_endpoints (tenant_id, id)
);
ALTER TABLE tenantguard.webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.webhook_endpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.webhook_endpoints FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
ALTER TABLE tenantguard.webhook_endpoint_secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.webhook_endpoint_secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.webhook_endpoint_secrets FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.webhook_endpoints TO tenantguard_app;
GRANT SELECT, INSERT, UPDATE ON tenantguard.webhook_endpoint_secrets TO tenantguard_app;

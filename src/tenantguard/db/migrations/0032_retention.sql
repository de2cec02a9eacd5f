-- 0032: retention. Each tenant may say how long each kind of its data is kept (days; absent:
-- the default); the expiry job deletes what is older, in the tenant's own context, and
-- clears what has expired by itself (kept answers, sign-in states, replay ids, quota windows).

CREATE TABLE tenantguard.retention_policies (
    tenant_id  uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    kind       text        NOT NULL CHECK (kind IN ('memory_versions', 'run_events', 'artifacts',
                                                    'webhook_deliveries', 'webhook_receipts')),
    days       integer     CHECK (days BETWEEN 1 AND 36500),  -- NULL: kept until deleted
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, kind)
);
ALTER TABLE tenantguard.retention_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.retention_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.retention_policies FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON tenantguard.retention_policies TO tenantguard_app;
GRANT SELECT (tenant_id), DELETE ON tenantguard.retention_policies TO tenantguard_auth;

-- What the expiry job deletes, as the service, within the tenant's context.
GRANT DELETE ON tenantguard.memory_versions, tenantguard.memory_entries, tenantguard.run_events,
    tenantguard.webhook_deliveries, tenantguard.webhook_attempts, tenantguard.webhook_receipts,
    tenantguard.saml_assertions, tenantguard.saml_logins, tenantguard.oidc_logins,
    tenantguard.magic_links TO tenantguard_app;
CREATE INDEX run_events_by_time ON tenantguard.run_events (tenant_id, created_at);
CREATE INDEX memory_versions_by_time ON tenantguard.memory_versions (tenant_id, changed_at);
CREATE INDEX webhook_deliveries_finished ON tenantguard.webhook_deliveries (tenant_id, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX webhook_receipts_received ON tenantguard.webhook_receipts (tenant_id, received_at);

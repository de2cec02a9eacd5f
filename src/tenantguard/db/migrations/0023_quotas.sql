-- 0023: quotas. Each tenant's quota policy (limits its admins set, checked by quotas.core),
-- and the counters of the PostgreSQL quota store: one row per (tenant, key), the key naming
-- the metric, the scope and the window ("tool_calls:agent:helper:day:2026-12-01"); `value`
-- is a rate's theoretical arrival time (microseconds) or a window's count.

CREATE TABLE tenantguard.quota_policies (
    tenant_id   uuid        NOT NULL PRIMARY KEY REFERENCES tenantguard.tenants (tenant_id),
    limits      jsonb       NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    updated_at  timestamptz NOT NULL
);
CREATE TABLE tenantguard.quota_state (
    tenant_id   uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    key         text        NOT NULL CHECK (length(key) BETWEEN 1 AND 300),
    value       bigint      NOT NULL CHECK (value >= 0),
    expires_at  timestamptz,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX quota_state_expiry ON tenantguard.quota_state (tenant_id, expires_at);
ALTER TABLE tenantguard.quota_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.quota_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.quota_policies FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
ALTER TABLE tenantguard.quota_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.quota_state FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.quota_state FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.quota_policies TO tenantguard_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenantguard.quota_state TO tenantguard_app;

-- A run whose budget is exhausted is stopped, for good: it may call nothing more.
ALTER TABLE tenantguard.runs DROP CONSTRAINT runs_status_check;
ALTER TABLE tenantguard.runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('created', 'running', 'succeeded', 'failed', 'cancelled', 'stopped'));
ALTER TABLE tenantguard.runs ADD COLUMN stopped_reason text
    CHECK (stopped_reason IS NULL OR length(stopped_reason) <= 200);

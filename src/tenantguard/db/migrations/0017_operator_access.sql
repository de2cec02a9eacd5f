-- 0017: cross-tenant operator access, only with the tenant's opt-in. One row per tenant that
-- ever decided; no row means off. Operators' reads are recorded in the tenant's own audit
-- chain (in the transaction that reads), which is what the tenant's view of them lists.

CREATE TABLE tenantguard.operator_access (
    tenant_id   uuid        NOT NULL PRIMARY KEY REFERENCES tenantguard.tenants (tenant_id),
    enabled     boolean     NOT NULL,
    changed_at  timestamptz NOT NULL,
    changed_by  text        NOT NULL
);
ALTER TABLE tenantguard.operator_access ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.operator_access FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.operator_access FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.operator_access TO tenantguard_app;

-- The customer's view of operator activity reads its chain by action.
CREATE INDEX audit_events_operator ON tenantguard.audit_events (tenant_id, action, seq)
    WHERE action LIKE 'operator.%';

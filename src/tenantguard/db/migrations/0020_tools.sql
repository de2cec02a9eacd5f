-- 0020: tools. An agent's tool grants and the tenant's tool policy (both JSON documents,
-- checked by tools.capabilities), the capabilities a run froze when it started, and
-- approvals: a pending call of a destructive or sensitive tool, bound to the hash of its
-- (run, tool, arguments), decided by a person, spent once.

CREATE TABLE tenantguard.agents (
    tenant_id   uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    name        text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    tools       jsonb       NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE tenantguard.tool_policies (
    tenant_id   uuid        NOT NULL PRIMARY KEY REFERENCES tenantguard.tenants (tenant_id),
    tools       jsonb       NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    updated_at  timestamptz NOT NULL
);
-- NULL: a run from before tools existed, which may call none.
ALTER TABLE tenantguard.runs ADD COLUMN capabilities jsonb;
CREATE TABLE tenantguard.approvals (
    tenant_id    uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    id           uuid        NOT NULL,
    run_id       uuid        NOT NULL,
    tool         text        NOT NULL,
    call_hash    text        NOT NULL CHECK (call_hash ~ '^[0-9a-f]{64}$'),
    arguments    jsonb       NOT NULL,
    status       text        NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'spent')),
    requested_at timestamptz NOT NULL,
    decided_by   text,
    decided_at   timestamptz,
    spent_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES tenantguard.runs (tenant_id, id)
);
CREATE INDEX approvals_by_call ON tenantguard.approvals (tenant_id, run_id, call_hash, status);
ALTER TABLE tenantguard.agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.agents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.agents FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
ALTER TABLE tenantguard.tool_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.tool_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.tool_policies FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
ALTER TABLE tenantguard.approvals ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.approvals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.approvals FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.agents TO tenantguard_app;
GRANT SELECT, INSERT, UPDATE ON tenantguard.tool_policies TO tenantguard_app;
GRANT SELECT, INSERT, UPDATE ON tenantguard.approvals TO tenantguard_app;

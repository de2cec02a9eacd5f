-- 0010: which roles must have proved a second factor before doing anything but managing
-- their own sessions and MFA. No row means the default: owners and admins.

CREATE TABLE tenantguard.mfa_policies (
    tenant_id   uuid        NOT NULL PRIMARY KEY REFERENCES tenantguard.tenants (tenant_id),
    roles       text[]      NOT NULL
                CHECK (roles <@ ARRAY['owner', 'admin', 'member', 'auditor']::text[]),
    updated_at  timestamptz NOT NULL
);
ALTER TABLE tenantguard.mfa_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.mfa_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.mfa_policies FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.mfa_policies TO tenantguard_app;

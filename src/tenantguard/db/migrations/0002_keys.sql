-- 0002: per-tenant data keys for envelope encryption, and the tenant's rotation policy.
-- Same rules as 0001: forced RLS, the tenant policy, composite keys with tenant_id first.

-- One row per (tenant, purpose, version). `wrapped_key` is the data key wrapped by the KEK
-- named in `kek_id`, with (tenant, purpose, version) as associated data. Crypto-shredding sets
-- it to NULL: with the only wrapped copy gone, nothing sealed under it opens again.
CREATE TABLE tenantguard.data_keys (
    tenant_id     uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    purpose       text        NOT NULL CHECK (purpose ~ '^[a-z][a-z0-9_.:-]{0,99}$'),
    version       integer     NOT NULL CHECK (version >= 1),
    kek_id        text        NOT NULL,
    wrapped_key   bytea,
    created_at    timestamptz NOT NULL,
    retired_at    timestamptz,
    destroyed_at  timestamptz,
    PRIMARY KEY (tenant_id, purpose, version),
    CHECK ((wrapped_key IS NULL) = (destroyed_at IS NOT NULL))
);
-- At most one active (sealing) version per tenant and purpose.
CREATE UNIQUE INDEX data_keys_one_active ON tenantguard.data_keys (tenant_id, purpose)
    WHERE retired_at IS NULL AND destroyed_at IS NULL;
ALTER TABLE tenantguard.data_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.data_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.data_keys FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.data_keys TO tenantguard_app;

-- How often a tenant's data keys rotate (default 90 days when no row exists).
CREATE TABLE tenantguard.key_policies (
    tenant_id      uuid        NOT NULL PRIMARY KEY REFERENCES tenantguard.tenants (tenant_id),
    rotation_days  integer     NOT NULL CHECK (rotation_days BETWEEN 1 AND 3650),
    updated_at     timestamptz NOT NULL
);
ALTER TABLE tenantguard.key_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.key_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.key_policies FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.key_policies TO tenantguard_app;

-- Platform jobs (KEK rewrap, rotation of what is due) act on every tenant in turn and must
-- enumerate them. The service role already chooses the tenant context it acts in, so a list of
-- ids widens nothing; it is still a named definer function the doctor allow-lists.
GRANT SELECT (tenant_id) ON tenantguard.tenants TO tenantguard_auth;
CREATE POLICY auth_list ON tenantguard.tenants FOR SELECT TO tenantguard_auth USING (true);
CREATE FUNCTION tenantguard.tenant_ids()
    RETURNS TABLE (tenant_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT t.tenant_id FROM tenantguard.tenants AS t ORDER BY t.tenant_id $$;
GRANT CREATE ON SCHEMA tenantguard TO tenantguard_auth;
ALTER FUNCTION tenantguard.tenant_ids() OWNER TO tenantguard_auth;
REVOKE CREATE ON SCHEMA tenantguard FROM tenantguard_auth;
REVOKE ALL ON FUNCTION tenantguard.tenant_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.tenant_ids() TO tenantguard_app;

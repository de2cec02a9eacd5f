-- 0031: purging a tenant. A purge is recorded in the platform realm (tenant_purges: it outlives
-- the tenant), and runs in steps that can each be repeated: credentials revoked, data keys
-- destroyed (crypto-shred), artifacts and files deleted, then every row of the tenant deleted
-- by purge_tenant_rows, and the result checked by tenant_row_counts. Both are definer
-- functions of tenantguard_auth on the doctor's allow-list.
--
-- purge_tenant_rows deletes only in the tenant's own context, only once a purge of the tenant
-- is recorded, and only once every data key of the tenant is destroyed: what it removes can no
-- longer be opened by anyone. The audit log is append-only for everyone (the owner included)
-- except this: a row of the tenant being purged, deleted by that function.

CREATE TABLE tenantguard.tenant_purges (
    tenant_id     uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    purged_tenant uuid        NOT NULL,
    requested_at  timestamptz NOT NULL,
    requested_by  text        NOT NULL CHECK (length(requested_by) <= 200),
    state         text        NOT NULL CHECK (state IN ('running', 'done')),
    finished_at   timestamptz,
    report        jsonb,
    PRIMARY KEY (tenant_id, purged_tenant),
    CHECK (tenant_id = '00000000-0000-0000-0000-000000000000'),
    CHECK (purged_tenant <> '00000000-0000-0000-0000-000000000000')
);
ALTER TABLE tenantguard.tenant_purges ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.tenant_purges FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.tenant_purges FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.tenant_purges TO tenantguard_app;
CREATE POLICY auth_purges ON tenantguard.tenant_purges FOR SELECT TO tenantguard_auth
    USING (true);
GRANT SELECT (purged_tenant, state) ON tenantguard.tenant_purges TO tenantguard_auth;
GRANT SELECT (tenant_id, destroyed_at) ON tenantguard.data_keys TO tenantguard_auth;

-- The definer may delete any tenant table's rows (RLS still confines it to the context's
-- tenant). Tables added later grant the same in their own migration; a test checks every one.
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
        WHERE c.relkind IN ('r', 'p') AND n.nspname = 'tenantguard'
    LOOP
        EXECUTE format('GRANT SELECT (tenant_id), DELETE ON tenantguard.%I TO tenantguard_auth', t);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION tenantguard.refuse_audit_mutation() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        IF TG_LEVEL = 'ROW' AND TG_OP = 'DELETE' AND current_user = 'tenantguard_auth'
           AND current_setting('tenantguard.purging', true) = OLD.tenant_id::text THEN
            RETURN OLD;  -- purge_tenant_rows, for the tenant it purges
        END IF;
        RAISE EXCEPTION 'audit events are append-only' USING ERRCODE = 'insufficient_privilege';
    END
    $$;

CREATE FUNCTION tenantguard.purge_tenant_rows(p_tenant uuid)
    RETURNS TABLE (table_name text, deleted bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    DECLARE
        t text;
        n bigint;
        progress boolean;
        remaining text[];
    BEGIN
        IF p_tenant IS NULL OR p_tenant = '00000000-0000-0000-0000-000000000000' THEN
            RAISE EXCEPTION 'the platform realm is never purged' USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF tenantguard.current_tenant() IS DISTINCT FROM p_tenant THEN
            RAISE EXCEPTION 'a purge runs in the tenant''s own context' USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF EXISTS (SELECT 1 FROM tenantguard.data_keys k
                   WHERE k.tenant_id = p_tenant AND k.destroyed_at IS NULL) THEN
            RAISE EXCEPTION 'the tenant''s data keys must be destroyed first' USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM tenantguard.tenant_purges r
                       WHERE r.purged_tenant = p_tenant AND r.state = 'running') THEN
            RAISE EXCEPTION 'no purge of this tenant is recorded' USING ERRCODE = 'insufficient_privilege';
        END IF;
        PERFORM set_config('tenantguard.purging', p_tenant::text, true);
        remaining := ARRAY(
            SELECT c.relname::text FROM pg_class c
            JOIN pg_namespace ns ON ns.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
            WHERE c.relkind IN ('r', 'p') AND ns.nspname = 'tenantguard' AND c.relname <> 'tenant_purges'
            ORDER BY 1);
        LOOP  -- children before parents, found by trying: a table still referenced waits a round
            progress := false;
            FOREACH t IN ARRAY remaining LOOP
                BEGIN
                    EXECUTE format('DELETE FROM tenantguard.%I WHERE tenant_id = $1', t) USING p_tenant;
                    GET DIAGNOSTICS n = ROW_COUNT;
                    table_name := t;
                    deleted := n;
                    RETURN NEXT;
                    remaining := array_remove(remaining, t);
                    progress := true;
                EXCEPTION WHEN foreign_key_violation THEN
                    NULL;
                END;
            END LOOP;
            EXIT WHEN cardinality(remaining) = 0 OR NOT progress;
        END LOOP;
        IF cardinality(remaining) > 0 THEN
            RAISE EXCEPTION 'rows of the tenant are still referenced in %', remaining;
        END IF;
        PERFORM set_config('tenantguard.purging', '', true);
    END
    $$;
GRANT CREATE ON SCHEMA tenantguard TO tenantguard_auth;
ALTER FUNCTION tenantguard.purge_tenant_rows(uuid) OWNER TO tenantguard_auth;
REVOKE CREATE ON SCHEMA tenantguard FROM tenantguard_auth;
REVOKE ALL ON FUNCTION tenantguard.purge_tenant_rows(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.purge_tenant_rows(uuid) TO tenantguard_app;

-- What is left of a tenant, table by table (tables with none are not listed): the purge's
-- check, which must find nothing. Counts only, in the caller's context's tenant.
CREATE FUNCTION tenantguard.tenant_row_counts(p_tenant uuid)
    RETURNS TABLE (table_name text, left_rows bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    DECLARE
        t text;
        n bigint;
    BEGIN
        IF tenantguard.current_tenant() IS DISTINCT FROM p_tenant THEN
            RAISE EXCEPTION 'counts are read in the tenant''s own context' USING ERRCODE = 'insufficient_privilege';
        END IF;
        FOR t IN
            SELECT c.relname::text FROM pg_class c
            JOIN pg_namespace ns ON ns.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
            WHERE c.relkind IN ('r', 'p') AND ns.nspname = 'tenantguard' AND c.relname <> 'tenant_purges'
            ORDER BY 1
        LOOP
            EXECUTE format('SELECT count(*) FROM tenantguard.%I WHERE tenant_id = $1', t) INTO n USING p_tenant;
            IF n > 0 THEN
                table_name := t;
                left_rows := n;
                RETURN NEXT;
            END IF;
        END LOOP;
    END
    $$;
GRANT CREATE ON SCHEMA tenantguard TO tenantguard_auth;
ALTER FUNCTION tenantguard.tenant_row_counts(uuid) OWNER TO tenantguard_auth;
REVOKE CREATE ON SCHEMA tenantguard FROM tenantguard_auth;
REVOKE ALL ON FUNCTION tenantguard.tenant_row_counts(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.tenant_row_counts(uuid) TO tenantguard_app;

-- 0022: an API key may be bound to one agent. A bound key acts only in that agent's runs: it
-- starts runs of that agent, reads them and calls tools in them, and sees no other run. The
-- agent must exist in the key's own tenant (a composite foreign key, like every other).

ALTER TABLE tenantguard.api_keys ADD COLUMN agent text;
ALTER TABLE tenantguard.api_keys ADD CONSTRAINT api_keys_agent_fkey
    FOREIGN KEY (tenant_id, agent) REFERENCES tenantguard.agents (tenant_id, name);
CREATE INDEX runs_by_agent ON tenantguard.runs (tenant_id, agent, created_at, id);

-- The resolver returns the binding too; a new return type needs a new function.
GRANT SELECT (agent) ON tenantguard.api_keys TO tenantguard_auth;
DROP FUNCTION tenantguard.resolve_api_key(bytea);
CREATE FUNCTION tenantguard.resolve_api_key(p_key_hash bytea)
    RETURNS TABLE (tenant_id uuid, id uuid, key_hash bytea, capabilities text[],
                   expires_at timestamptz, revoked_at timestamptz, last_used_at timestamptz,
                   agent text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT k.tenant_id, k.id, k.key_hash, k.capabilities, k.expires_at, k.revoked_at,
               k.last_used_at, k.agent
        FROM tenantguard.api_keys AS k
        WHERE k.key_hash = p_key_hash
        LIMIT 2
    $$;
GRANT CREATE ON SCHEMA tenantguard TO tenantguard_auth;
ALTER FUNCTION tenantguard.resolve_api_key(bytea) OWNER TO tenantguard_auth;
REVOKE CREATE ON SCHEMA tenantguard FROM tenantguard_auth;
REVOKE ALL ON FUNCTION tenantguard.resolve_api_key(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.resolve_api_key(bytea) TO tenantguard_app;

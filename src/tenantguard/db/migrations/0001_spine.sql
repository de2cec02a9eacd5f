-- 0001: the spine. Tenants, API keys, memory with versions, runs and events, the audit chain.
--
-- Rules every tenant table follows (tenantguard doctor and tests/security check them all):
--   tenant_id uuid NOT NULL; primary key leading with tenant_id; ENABLE + FORCE RLS;
--   one policy USING and WITH CHECK (tenant_id = tenantguard.current_tenant());
--   foreign keys between tenant tables are composite (tenant_id, x) so that a foreign-key check
--   (which bypasses RLS) cannot reveal another tenant's row; unique keys include tenant_id;
--   ids are random uuids, never sequences.
-- Runs as tenantguard_owner, in one transaction.

-- No context means NULL, which equals nothing: zero rows, and every write refused.
-- After a transaction ends current_setting(k, true) is '' rather than NULL, hence NULLIF.
CREATE FUNCTION tenantguard.current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

REVOKE ALL ON SCHEMA tenantguard FROM PUBLIC;
GRANT USAGE ON SCHEMA tenantguard TO tenantguard_app, tenantguard_auth;
REVOKE ALL ON FUNCTION tenantguard.current_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.current_tenant() TO tenantguard_app, tenantguard_auth;

------------------------------------------------------------------------------------------------
-- tenants: each tenant sees exactly its own row.
CREATE TABLE tenantguard.tenants (
    tenant_id   uuid        NOT NULL PRIMARY KEY,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE tenantguard.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.tenants FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT ON tenantguard.tenants TO tenantguard_app;

-- The platform realm's own row, so that platform audit events (an unknown key) can chain.
SELECT set_config('app.tenant_id', '00000000-0000-0000-0000-000000000000', true);
INSERT INTO tenantguard.tenants (tenant_id, name)
    VALUES ('00000000-0000-0000-0000-000000000000', 'platform');
SELECT set_config('app.tenant_id', '', true);

------------------------------------------------------------------------------------------------
-- api_keys: only SHA-256 hashes of the keys are stored.
CREATE TABLE tenantguard.api_keys (
    tenant_id       uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    id              uuid        NOT NULL,
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    key_hash        bytea       NOT NULL CHECK (length(key_hash) = 32),
    display_prefix  text        NOT NULL,
    capabilities    text[]      NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz,
    revoked_at      timestamptz,
    last_used_at    timestamptz,
    rotated_from    uuid,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, key_hash),
    FOREIGN KEY (tenant_id, rotated_from) REFERENCES tenantguard.api_keys (tenant_id, id)
);
-- Lookup by hash happens before the tenant is known (see resolve_api_key below).
CREATE INDEX api_keys_key_hash ON tenantguard.api_keys (key_hash);
ALTER TABLE tenantguard.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.api_keys FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.api_keys TO tenantguard_app;

-- The one cross-tenant read: a key hash to its tenant, capability set and state.
-- Owned by the NOLOGIN role tenantguard_auth, which may read these columns only, only through
-- this function. It returns at most two rows so that the caller can refuse an ambiguous match.
GRANT SELECT (tenant_id, id, key_hash, capabilities, expires_at, revoked_at, last_used_at)
    ON tenantguard.api_keys TO tenantguard_auth;
CREATE POLICY auth_resolve ON tenantguard.api_keys FOR SELECT TO tenantguard_auth USING (true);
CREATE FUNCTION tenantguard.resolve_api_key(p_key_hash bytea)
    RETURNS TABLE (tenant_id uuid, id uuid, key_hash bytea, capabilities text[],
                   expires_at timestamptz, revoked_at timestamptz, last_used_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT k.tenant_id, k.id, k.key_hash, k.capabilities, k.expires_at, k.revoked_at,
               k.last_used_at
        FROM tenantguard.api_keys AS k
        WHERE k.key_hash = p_key_hash
        LIMIT 2
    $$;
-- A new owner needs CREATE on the schema for the hand-over only; it is taken back at once.
GRANT CREATE ON SCHEMA tenantguard TO tenantguard_auth;
ALTER FUNCTION tenantguard.resolve_api_key(bytea) OWNER TO tenantguard_auth;
REVOKE CREATE ON SCHEMA tenantguard FROM tenantguard_auth;
REVOKE ALL ON FUNCTION tenantguard.resolve_api_key(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.resolve_api_key(bytea) TO tenantguard_app;

------------------------------------------------------------------------------------------------
-- memory: mutable tenant state with soft delete, restore and a version history.
CREATE TABLE tenantguard.memory_entries (
    tenant_id   uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    id          uuid        NOT NULL,
    key         text        NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    content     text        NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
-- A live key is unique within its tenant only: another tenant's key neither collides nor leaks.
CREATE UNIQUE INDEX memory_entries_live_key
    ON tenantguard.memory_entries (tenant_id, key) WHERE deleted_at IS NULL;
CREATE INDEX memory_entries_created ON tenantguard.memory_entries (tenant_id, created_at, id);
ALTER TABLE tenantguard.memory_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.memory_entries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.memory_entries FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.memory_entries TO tenantguard_app;

CREATE TABLE tenantguard.memory_versions (
    tenant_id   uuid        NOT NULL,
    entry_id    uuid        NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    change      text        NOT NULL CHECK (change IN ('created', 'updated', 'deleted', 'restored')),
    key         text        NOT NULL,
    content     text        NOT NULL,
    changed_at  timestamptz NOT NULL,
    actor       text        NOT NULL,
    PRIMARY KEY (tenant_id, entry_id, version),
    FOREIGN KEY (tenant_id, entry_id) REFERENCES tenantguard.memory_entries (tenant_id, id)
);
ALTER TABLE tenantguard.memory_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.memory_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.memory_versions FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT ON tenantguard.memory_versions TO tenantguard_app;

------------------------------------------------------------------------------------------------
-- runs and their events.
CREATE TABLE tenantguard.runs (
    tenant_id   uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    id          uuid        NOT NULL,
    agent       text        NOT NULL CHECK (length(agent) BETWEEN 1 AND 200),
    status      text        NOT NULL CHECK (status IN ('created', 'running', 'succeeded', 'failed', 'cancelled')),
    input       jsonb       NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX runs_created ON tenantguard.runs (tenant_id, created_at, id);
ALTER TABLE tenantguard.runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.runs FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.runs TO tenantguard_app;

CREATE TABLE tenantguard.run_events (
    tenant_id   uuid        NOT NULL,
    run_id      uuid        NOT NULL,
    seq         integer     NOT NULL CHECK (seq >= 1),
    id          uuid        NOT NULL,
    type        text        NOT NULL CHECK (length(type) BETWEEN 1 AND 100),
    data        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, run_id, seq),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES tenantguard.runs (tenant_id, id)
);
ALTER TABLE tenantguard.run_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.run_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.run_events FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT ON tenantguard.run_events TO tenantguard_app;

------------------------------------------------------------------------------------------------
-- audit_events: append-only, hash-chained per tenant. `seq` is the per-tenant leaf index of the
-- Merkle log to come; `event_hash` is SHA-256 of the canonical event (the future leaf input),
-- `chain_hash` = SHA-256(previous chain_hash || event_hash).
CREATE TABLE tenantguard.audit_events (
    tenant_id    uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    seq          bigint      NOT NULL CHECK (seq >= 0),
    id           uuid        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    actor_type   text        NOT NULL,
    actor_id     text        NOT NULL,
    action       text        NOT NULL,
    target_type  text        NOT NULL,
    target_id    text        NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    reason       text        NOT NULL,
    request_id   text        NOT NULL,
    payload      text        NOT NULL,
    event_hash   bytea       NOT NULL CHECK (length(event_hash) = 32),
    chain_hash   bytea       NOT NULL CHECK (length(chain_hash) = 32),
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, id)
);
ALTER TABLE tenantguard.audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.audit_events FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT ON tenantguard.audit_events TO tenantguard_app;

-- The backstop for everyone, the owner included: history is not edited in place.
CREATE FUNCTION tenantguard.refuse_audit_mutation() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        RAISE EXCEPTION 'audit events are append-only' USING ERRCODE = 'insufficient_privilege';
    END
    $$;
REVOKE ALL ON FUNCTION tenantguard.refuse_audit_mutation() FROM PUBLIC;
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON tenantguard.audit_events
    FOR EACH ROW EXECUTE FUNCTION tenantguard.refuse_audit_mutation();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON tenantguard.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.refuse_audit_mutation();

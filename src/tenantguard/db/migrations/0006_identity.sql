-- 0006: identity. Tenant users with roles, database-backed sessions, and rotating refresh
-- tokens (stored hashed). A session is the unit of revocation: every request made with an
-- access token checks its session, so revocation takes effect on the next request.

CREATE TABLE tenantguard.users (
    tenant_id    uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    id           uuid        NOT NULL,
    email        text        NOT NULL CHECK (email = lower(email) AND length(email) <= 320),
    role         text        NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'auditor')),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    deleted_at   timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX users_live_email ON tenantguard.users (tenant_id, email)
    WHERE deleted_at IS NULL;
ALTER TABLE tenantguard.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.users FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.users TO tenantguard_app;

CREATE TABLE tenantguard.sessions (
    tenant_id      uuid        NOT NULL,
    id             uuid        NOT NULL,
    user_id        uuid        NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    auth_time      timestamptz NOT NULL,
    amr            text[]      NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoke_reason  text,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES tenantguard.users (tenant_id, id),
    CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL))
);
CREATE INDEX sessions_user ON tenantguard.sessions (tenant_id, user_id, created_at);
ALTER TABLE tenantguard.sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.sessions FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.sessions TO tenantguard_app;

-- One row per refresh token ever issued in a session (its family). Using one marks it used
-- and issues the next; presenting a used one again revokes the session.
CREATE TABLE tenantguard.refresh_tokens (
    tenant_id    uuid        NOT NULL,
    session_id   uuid        NOT NULL,
    generation   integer     NOT NULL CHECK (generation >= 1),
    token_hash   bytea       NOT NULL CHECK (length(token_hash) = 32),
    issued_at    timestamptz NOT NULL,
    used_at      timestamptz,
    PRIMARY KEY (tenant_id, session_id, generation),
    UNIQUE (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, session_id) REFERENCES tenantguard.sessions (tenant_id, id)
);
CREATE INDEX refresh_tokens_hash ON tenantguard.refresh_tokens (token_hash);
ALTER TABLE tenantguard.refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.refresh_tokens FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.refresh_tokens TO tenantguard_app;

-- A presented refresh token names no tenant: resolve its hash the way API keys are resolved,
-- through one narrow definer function.
GRANT SELECT (tenant_id, session_id, generation, token_hash, used_at)
    ON tenantguard.refresh_tokens TO tenantguard_auth;
CREATE POLICY auth_resolve ON tenantguard.refresh_tokens FOR SELECT TO tenantguard_auth
    USING (true);
CREATE FUNCTION tenantguard.resolve_refresh_token(p_token_hash bytea)
    RETURNS TABLE (tenant_id uuid, session_id uuid, generation integer, token_hash bytea,
                   used_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT r.tenant_id, r.session_id, r.generation, r.token_hash, r.used_at
        FROM tenantguard.refresh_tokens AS r
        WHERE r.token_hash = p_token_hash
        LIMIT 2
    $$;
GRANT CREATE ON SCHEMA tenantguard TO tenantguard_auth;
ALTER FUNCTION tenantguard.resolve_refresh_token(bytea) OWNER TO tenantguard_auth;
REVOKE CREATE ON SCHEMA tenantguard FROM tenantguard_auth;
REVOKE ALL ON FUNCTION tenantguard.resolve_refresh_token(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.resolve_refresh_token(bytea) TO tenantguard_app;

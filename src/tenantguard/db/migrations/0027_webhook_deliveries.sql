-- 0027: outbound webhooks' deliveries (a transactional outbox: an event's deliveries are
-- written in the transaction of what caused it) and the log of each attempt. A worker claims
-- due deliveries with a lease (a crashed worker's claims come due again when it ends) and
-- finds the tenants that have any through tenant ids only (webhook_due_tenants).

CREATE TABLE tenantguard.webhook_deliveries (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    endpoint_id     uuid        NOT NULL,
    event_type      text        NOT NULL CHECK (length(event_type) <= 100),
    body            bytea       NOT NULL,
    created_at      timestamptz NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL CHECK (attempts >= 0),
    next_attempt_at timestamptz,
    lease_until     timestamptz,
    finished_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES tenantguard.webhook_endpoints (tenant_id, id)
);
CREATE INDEX webhook_deliveries_due ON tenantguard.webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE TABLE tenantguard.webhook_attempts (
    tenant_id   uuid        NOT NULL,
    delivery_id uuid        NOT NULL,
    attempt     integer     NOT NULL CHECK (attempt >= 1),
    started_at  timestamptz NOT NULL,
    status_code integer,
    error       text        NOT NULL CHECK (length(error) <= 200),
    duration_ms integer     NOT NULL CHECK (duration_ms >= 0),
    PRIMARY KEY (tenant_id, delivery_id, attempt),
    FOREIGN KEY (tenant_id, delivery_id) REFERENCES tenantguard.webhook_deliveries (tenant_id, id)
);
ALTER TABLE tenantguard.webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.webhook_deliveries FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
ALTER TABLE tenantguard.webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.webhook_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.webhook_attempts FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, UPDATE ON tenantguard.webhook_deliveries TO tenantguard_app;
GRANT SELECT, INSERT ON tenantguard.webhook_attempts TO tenantguard_app;

-- Which tenants have a delivery due: ids only, for the worker (which then works inside each
-- tenant's own context). Owned by the auth role, which may read just these columns.
GRANT SELECT (tenant_id, status, next_attempt_at, lease_until)
    ON tenantguard.webhook_deliveries TO tenantguard_auth;
CREATE POLICY auth_due ON tenantguard.webhook_deliveries FOR SELECT TO tenantguard_auth
    USING (true);
CREATE FUNCTION tenantguard.webhook_due_tenants(at timestamptz)
    RETURNS TABLE (tenant_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT DISTINCT d.tenant_id FROM tenantguard.webhook_deliveries AS d
          WHERE d.status = 'pending' AND d.next_attempt_at <= at
            AND (d.lease_until IS NULL OR d.lease_until <= at)
          ORDER BY d.tenant_id $$;
GRANT CREATE ON SCHEMA tenantguard TO tenantguard_auth;
ALTER FUNCTION tenantguard.webhook_due_tenants(timestamptz) OWNER TO tenantguard_auth;
REVOKE CREATE ON SCHEMA tenantguard FROM tenantguard_auth;
REVOKE ALL ON FUNCTION tenantguard.webhook_due_tenants(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.webhook_due_tenants(timestamptz) TO tenantguard_app;

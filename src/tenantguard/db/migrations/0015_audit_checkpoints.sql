-- 0015: signed checkpoints of each tenant's audit log (RFC 6962 Merkle tree heads, in the
-- C2SP signed-note checkpoint form). Append-only like the events: the doctor checks every
-- audit_* table for the triggers and for the service's missing UPDATE/DELETE/TRUNCATE.

CREATE TABLE tenantguard.audit_checkpoints (
    tenant_id   uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    id          uuid        NOT NULL,
    tree_size   bigint      NOT NULL CHECK (tree_size >= 0),
    root_hash   bytea       NOT NULL CHECK (length(root_hash) = 32),
    signed_at   timestamptz NOT NULL,
    kid         text        NOT NULL,
    note        text        NOT NULL CHECK (length(note) <= 4096),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_checkpoints_latest ON tenantguard.audit_checkpoints (tenant_id, signed_at);
ALTER TABLE tenantguard.audit_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.audit_checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.audit_checkpoints FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT ON tenantguard.audit_checkpoints TO tenantguard_app;
CREATE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON tenantguard.audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION tenantguard.refuse_audit_mutation();
CREATE TRIGGER audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON tenantguard.audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION tenantguard.refuse_audit_mutation();

-- 0030: artifacts. A tenant's files, sealed under its key and kept in the artifact store (a
-- directory under the data root, or an S3-compatible bucket) at
-- orgs/<tenant_id>/artifacts/<id>: the row says what the artifact is; the name is the
-- tenant's label for it, never a path. Downloads go through signed URLs only.

CREATE TABLE tenantguard.artifacts (
    tenant_id    uuid        NOT NULL REFERENCES tenantguard.tenants (tenant_id),
    id           uuid        NOT NULL,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    content_type text        NOT NULL CHECK (content_type ~ '^[a-z0-9!#$&^_.+-]{1,127}/[a-z0-9!#$&^_.+-]{1,127}$'),
    size         bigint      NOT NULL CHECK (size >= 0),
    sha256       text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    store        text        NOT NULL CHECK (store IN ('local', 's3')),
    created_at   timestamptz NOT NULL,
    created_by   text        NOT NULL CHECK (length(created_by) <= 200),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX artifacts_by_time ON tenantguard.artifacts (tenant_id, created_at DESC, id);
ALTER TABLE tenantguard.artifacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.artifacts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenantguard.artifacts FOR ALL TO PUBLIC
    USING (tenant_id = tenantguard.current_tenant())
    WITH CHECK (tenant_id = tenantguard.current_tenant());
GRANT SELECT, INSERT, DELETE ON tenantguard.artifacts TO tenantguard_app;

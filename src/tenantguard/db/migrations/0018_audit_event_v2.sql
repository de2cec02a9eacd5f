-- 0018: audit events, format 2: each event also names the policy version that decided it and
-- the service that wrote it, inside its hash. Existing events keep format 1 and verify as
-- they were written (adding columns with defaults fires no row trigger).

ALTER TABLE tenantguard.audit_events
    ADD COLUMN format smallint NOT NULL DEFAULT 1 CHECK (format IN (1, 2)),
    ADD COLUMN policy_version text NOT NULL DEFAULT '' CHECK (length(policy_version) <= 200),
    ADD COLUMN source text NOT NULL DEFAULT '' CHECK (length(source) <= 64);

-- 0014: the platform realm's people. The vendor's operators are users of the platform realm
-- (the nil tenant), with the one role `operator`; tenant users keep the four tenant roles.
-- The constraint makes the split structural: no tenant can hold an operator, and the platform
-- realm can hold nobody else.

ALTER TABLE tenantguard.users DROP CONSTRAINT users_role_check;
ALTER TABLE tenantguard.users ADD CONSTRAINT users_role_by_realm CHECK (
    CASE WHEN tenant_id = '00000000-0000-0000-0000-000000000000'
        THEN role = 'operator'
        ELSE role IN ('owner', 'admin', 'member', 'auditor')
    END
);

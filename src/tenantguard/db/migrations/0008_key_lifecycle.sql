-- 0008: a data key's lifecycle only moves forward. Destroyed stays destroyed (a crypto-shred
-- cannot be undone by writing an old wrapped key back), retired stays retired, and a key's
-- identity never changes. For everyone, the owner included.

CREATE FUNCTION tenantguard.data_key_forward_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        IF OLD.destroyed_at IS NOT NULL THEN
            RAISE EXCEPTION 'a destroyed data key stays destroyed'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.tenant_id <> OLD.tenant_id OR NEW.purpose <> OLD.purpose
           OR NEW.version <> OLD.version OR NEW.created_at <> OLD.created_at THEN
            RAISE EXCEPTION 'a data key''s identity does not change'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF OLD.retired_at IS NOT NULL AND NEW.retired_at IS DISTINCT FROM OLD.retired_at THEN
            RAISE EXCEPTION 'a retired data key stays retired'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END
    $$;
REVOKE ALL ON FUNCTION tenantguard.data_key_forward_only() FROM PUBLIC;
CREATE TRIGGER data_keys_forward_only
    BEFORE UPDATE ON tenantguard.data_keys
    FOR EACH ROW EXECUTE FUNCTION tenantguard.data_key_forward_only();

-- 0011: wrong second-factor codes are counted per user: after five within 15 minutes every code
-- is refused (the same 401) until the window has passed, so six digits cannot be guessed.
ALTER TABLE tenantguard.totp_factors
    ADD COLUMN failures integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    ADD COLUMN failures_since timestamptz;

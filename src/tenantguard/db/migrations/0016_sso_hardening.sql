-- 0016: single sign-on, hardened after review.
-- The OIDC client secret moves into the configuration, sealed under the tenant's key for this
-- one column: naming a vault secret let whoever configures SSO send any vault value to an
-- issuer of their choosing. A configuration that still names a vault secret keeps working
-- only after it is configured again (sign-ins refuse it with an audited reason meanwhile).
-- Each login in flight also keeps the hash of a binding value that the app holds for the
-- browser that started it (login CSRF: the IdP's form alone no longer completes a sign-in).

ALTER TABLE tenantguard.oidc_configs ADD COLUMN client_secret_sealed bytea;
ALTER TABLE tenantguard.oidc_logins ADD COLUMN binding_hash bytea
    CHECK (binding_hash IS NULL OR length(binding_hash) = 32);
ALTER TABLE tenantguard.saml_logins ADD COLUMN binding_hash bytea
    CHECK (binding_hash IS NULL OR length(binding_hash) = 32);

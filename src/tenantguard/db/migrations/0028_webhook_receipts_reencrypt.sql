-- 0028: re-encryption after a key rotation re-seals every sealed column in place
-- (crypto.fields.reencrypt): the service may rewrite a receipt's body, and nothing else of it.
GRANT UPDATE (body) ON tenantguard.webhook_receipts TO tenantguard_app;

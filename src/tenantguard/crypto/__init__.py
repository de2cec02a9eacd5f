"""Envelope encryption: KEK providers (key file, PKCS#11 HSM), per-tenant data keys, fields."""

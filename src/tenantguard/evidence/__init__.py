"""Evidence packs for auditors: signed, checkable offline (`tenantguard evidence`)."""

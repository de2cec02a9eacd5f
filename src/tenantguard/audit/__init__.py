"""Tamper-evident audit: a per-tenant hash chain, appended in the same transaction as the change."""

from tenantguard.audit.chain import AuditEvent, ChainVerdict, verify_chain
from tenantguard.audit.store import AuditRecord, append, iter_events, list_events, verify_tenant

__all__ = [
    "AuditEvent",
    "AuditRecord",
    "ChainVerdict",
    "append",
    "iter_events",
    "list_events",
    "verify_chain",
    "verify_tenant",
]

"""tenantguard: the security kernel for multi-tenant AI agent platforms.

The library face. The gateway (`tenantguard serve`) and the CLI are built from these parts.
"""

from tenantguard.audit import AuditEvent, AuditRecord, ChainVerdict, verify_chain
from tenantguard.authz import ACTIONS
from tenantguard.clock import Clock, SystemClock
from tenantguard.context import PLATFORM_TENANT_ID, Principal, TenantContext
from tenantguard.db import Database
from tenantguard.errors import TenantGuardError
from tenantguard.gateway import create_app
from tenantguard.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "ACTIONS",
    "AuditEvent",
    "AuditRecord",
    "ChainVerdict",
    "Clock",
    "Database",
    "PLATFORM_TENANT_ID",
    "Principal",
    "Settings",
    "SystemClock",
    "TenantContext",
    "TenantGuardError",
    "__version__",
    "create_app",
    "verify_chain",
]

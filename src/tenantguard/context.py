"""Who is acting, for which tenant: the values every gate and handler receives.

A `TenantContext` is built once per request by authentication and passed explicitly; nothing
reads a tenant from a global. The only contextvar is the request id, bound at the edge so that
log lines carry it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

# The platform realm: events that concern no tenant (an unknown key, say) chain here.
PLATFORM_TENANT_ID = UUID(int=0)

# An agent's name (as the agents table's CHECK has it): what keys, runs and limits name.
AGENT_NAME = r"[a-z0-9][a-z0-9_.-]{0,62}"
ActorType = Literal[
    "api_key", "user", "operator", "agent", "system", "anonymous", "webhook", "signed_url"
]

_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def accept_request_id(candidate: str | None) -> str:
    """Return `candidate` if it is a well-formed request id, else a fresh random one.

    Well-formed: 1..128 characters of `[A-Za-z0-9._:-]`, starting with a letter or digit, so a
    request id can never inject into a log line, a header or an audit record.
    """
    if candidate is not None and _REQUEST_ID.fullmatch(candidate):
        return candidate
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated actor: its type and stable id (an API key id, a user id, ...)."""

    type: ActorType
    id: str


@dataclass(frozen=True, slots=True)
class TenantContext:
    """The tenant a request acts for, who acts, and what it may do."""

    tenant_id: UUID
    principal: Principal
    capabilities: frozenset[str]
    request_id: str
    session_id: UUID | None = None  # set when a user acts through a session's access token
    auth_time: datetime | None = None  # when the session's user last proved a factor
    amr: tuple[str, ...] = ()  # how (RFC 8176 style: "email", "otp", "recovery", ...)
    # The tenant's MFA policy covers this person's role and no second factor is proved yet.
    mfa_pending: bool = False
    # The one agent an API key is bound to: it acts only in that agent's runs (None: any).
    agent: str | None = None
    # When the credential itself stops (an API key's expiry): nothing it mints outlives it.
    expires_at: datetime | None = None

    def allows(self, capability: str) -> bool:
        return capability in self.capabilities

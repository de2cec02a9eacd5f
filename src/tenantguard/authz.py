"""Actions and capabilities: what a credential may do, as data in one place.

Every gateway route declares the one action it performs; a credential carries a set of
capabilities, each the name of an action it may perform. Deny by default: an action not in the
set is refused with `capability_denied`, and an unknown capability name is an error, never
ignored. Roles of people map onto these same actions (`ROLE_ACTIONS`).

Two realms: tenants, and the platform (the vendor's operators, who are members of no tenant).
An action belongs to one realm (`sessions:self` to both): a tenant credential can never hold a
platform action, and an operator's session can never perform a tenant action, whatever its
token says (`in_realm`, checked by the gateway on every request).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from uuid import UUID

from tenantguard.context import PLATFORM_TENANT_ID, TenantContext
from tenantguard.errors import CapabilityDenied, RequestInvalid

TENANT_ACTIONS: Mapping[str, str] = MappingProxyType(
    {
        "agents:manage": "configure agents and the tools each may be granted",
        "api_keys:manage": "create, rotate and revoke API keys (never wider than one's own)",
        "approvals:decide": "approve or deny a run's pending tool call (people only)",
        "api_keys:read": "list API keys (never their secrets)",
        "artifacts:read": "list artifacts and issue their signed download URLs",
        "artifacts:write": "upload and delete artifacts",
        "audit:checkpoint": "sign a checkpoint of the tenant's audit log now",
        "audit:read": "read the tenant's audit events, checkpoints and proofs",
        "egress_policy:manage": "set the hosts the tenant's outbound calls may or may not reach",
        "evidence:export": "build a signed evidence pack of the tenant's audit and controls",
        "memory:read": "read memory entries, deleted ones and their versions",
        "memory:write": "create, change, delete and restore memory entries",
        "model_providers:read": "list the tenant's model providers",
        "models:call": "call the tenant's models through the gateway (/v1/chat/completions)",
        "model_providers:write": "configure the tenant's model providers (bring your own key)",
        "operator_access:manage": "turn the platform operators' read access on or off",
        "pii:scan": "find personal data in a text (and read the tenant's PII policy)",
        "pii:redact": "redact personal data by the tenant's policy",
        "pii:reidentify": "restore the originals of reversible PII tokens (audited)",
        "pii_policy:manage": "set what happens to personal data, per class and channel",
        "quotas:manage": "set the tenant's rate limits, quotas and run budgets",
        "quotas:read": "read the tenant's limits (its own and the platform's) and their use",
        "retention:manage": "set how long each kind of the tenant's data is kept",
        "retention:read": "read how long each kind of the tenant's data is kept",
        "runs:read": "read runs and their events",
        "runs:write": "start runs and append their events",
        "secrets:read": "list vault secrets and their versions (never values)",
        "secrets:write": "write and delete vault secrets",
        "sessions:manage": "list and revoke any session of the tenant",
        "sessions:self": "list and revoke one's own sessions",
        "tool_policy:manage": "set which tools the tenant's runs may be granted, and how far",
        "tools:call": "call a tool in a run, through the policy gate",
        "tools:read": "read the tool catalogue, agents, the tool policy and approvals",
        "users:manage": "add users, change their roles, remove them",
        "users:read": "list the tenant's users",
        "webhooks:manage": "configure the sources whose signed webhooks the tenant accepts",
        "webhooks:read": "list webhook sources and what they sent",
    }
)
PLATFORM_ACTIONS: Mapping[str, str] = MappingProxyType(
    {
        "platform:operators:read": "list the platform's operators",
        "platform:tenant_data:read": "read a tenant's data, while it has opted in (audited)",
        "platform:tenant_data:delete": "delete a tenant's data, while it has opted in (audited)",
        "platform:tenants:purge": "purge a tenant: every row, file, object and key (audited)",
    }
)
# Actions of either realm: a person's own sessions and second factors.
BOTH_REALMS = frozenset({"sessions:self"})
ACTIONS: Mapping[str, str] = MappingProxyType({**TENANT_ACTIONS, **PLATFORM_ACTIONS})

# Every tenant action: what a tenant's first API key holds, and the most any tenant key may.
ADMIN_CAPABILITIES = frozenset(TENANT_ACTIONS)

# Actions a person may take only with a second factor from the last few minutes (step-up).
# API keys are non-interactive; their explicit capabilities stand instead.
SENSITIVE_ACTIONS = frozenset(
    {
        "api_keys:manage",  # minting credentials
        "users:manage",  # roles, removals, the MFA policy
        "sessions:manage",  # revoking others' sessions, all of a tenant's
        "secrets:write",  # the vault's values
        "model_providers:write",  # where the tenant's keys are sent
        "operator_access:manage",  # letting the vendor's staff read the tenant's data
        "pii:reidentify",  # personal data back in the clear
        "pii_policy:manage",  # what leaves on which channel
        "tool_policy:manage",  # what the tenant's runs may do
        "egress_policy:manage",  # where the tenant's outbound calls may go
        "quotas:manage",  # raising a budget is what a runaway agent would want
        "webhooks:manage",  # which signatures make a request authentic
        "retention:manage",  # a shorter retention deletes data
        "approvals:decide",  # letting a destructive or sensitive call happen
        "platform:tenant_data:read",  # an operator reading a customer's data
        "platform:tenant_data:delete",
        "platform:tenants:purge",  # deleting a customer, irreversibly
    }
)

# Actions a POST performs with no effect beyond its audit event: reads that need a body. A
# repeat runs again, so consent and policy are checked anew (an operator's read after the
# tenant opted out is refused); their answers, which are the data itself, are never kept
# under an Idempotency-Key.
REPEATABLE_ACTIONS = frozenset(
    {"platform:tenant_data:read", "pii:scan", "pii:redact", "pii:reidentify"}
)

ROLES = ("owner", "admin", "member", "auditor")  # tenant roles
PLATFORM_ROLES = ("operator",)  # the platform realm's only role
_READS = frozenset(a for a in TENANT_ACTIONS if a.endswith(":read"))
# The role x action matrix: what a tenant user of each role may do. Data, in one place.
ROLE_ACTIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "owner": ADMIN_CAPABILITIES,
        "admin": ADMIN_CAPABILITIES,
        "member": frozenset(
            {
                "memory:read",
                "memory:write",
                "artifacts:read",
                "artifacts:write",
                "runs:read",
                "runs:write",
                "model_providers:read",
                "models:call",
                "secrets:read",
                "sessions:self",
                "pii:scan",
                "pii:redact",
                "tools:read",
                "tools:call",
            }
        ),
        "auditor": _READS | {"sessions:self", "audit:checkpoint", "evidence:export"},
        "operator": frozenset(
            {
                "sessions:self",
                "platform:operators:read",
                "platform:tenant_data:read",
                "platform:tenant_data:delete",
                "platform:tenants:purge",
            }
        ),
    }
)


def _policy_version() -> str:
    """A digest of the matrix above: every audit event names the policy that decided it, so an
    auditor can tell which rules were in force (and spot a change between two events)."""
    document = {
        "actions": sorted(ACTIONS),
        "roles": {role: sorted(actions) for role, actions in sorted(ROLE_ACTIONS.items())},
        "sensitive": sorted(SENSITIVE_ACTIONS),
        "both_realms": sorted(BOTH_REALMS),
    }
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
    return f"authz:{digest[:16]}"


POLICY_VERSION = _policy_version()


def roles_of(tenant_id: UUID) -> tuple[str, ...]:
    """The roles a person of this realm may have."""
    return PLATFORM_ROLES if tenant_id == PLATFORM_TENANT_ID else ROLES


def in_realm(tenant_id: UUID, action: str) -> bool:
    """Whether `action` may be performed in the realm of `tenant_id` at all."""
    if action in BOTH_REALMS:
        return True
    platform = tenant_id == PLATFORM_TENANT_ID
    return action in (PLATFORM_ACTIONS if platform else TENANT_ACTIONS)


def capability_set(names: Iterable[str]) -> frozenset[str]:
    """Validate the capability names of a tenant credential against the allow-list."""
    chosen = frozenset(names)
    unknown = chosen - ADMIN_CAPABILITIES
    if unknown:
        raise RequestInvalid("The request names a capability that does not exist.")
    return chosen


def require(ctx: TenantContext, action: str) -> None:
    """Refuse unless `ctx` holds the capability for `action`."""
    if action not in ACTIONS:  # a programming error: fail closed, loudly
        raise CapabilityDenied(action, "The action is not known.")
    if not (ctx.allows(action) and in_realm(ctx.tenant_id, action)):
        raise CapabilityDenied(action)

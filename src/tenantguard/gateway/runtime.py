"""What the gateway's handlers share: the database, the clock, the deployment config."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request

from tenantguard.artifacts.service import Artifacts
from tenantguard.audit.checkpoints import Checkpointer
from tenantguard.clock import Clock
from tenantguard.crypto.keyring import Keyring
from tenantguard.data.operator_access import OperatorAccess
from tenantguard.data.secrets import RecentReads
from tenantguard.db.pool import Database
from tenantguard.egress.check import EgressPolicy
from tenantguard.errors import ServiceUnavailable
from tenantguard.idempotency import DEFAULT_RETENTION
from tenantguard.identity.magiclinks import MagicLinks
from tenantguard.identity.oidc import OidcClient
from tenantguard.identity.saml import SamlServiceProvider
from tenantguard.identity.sessions import Sessions
from tenantguard.mail import Mailer
from tenantguard.models.prices import Price
from tenantguard.pii.sentinel import Sentinel
from tenantguard.purge import Purger
from tenantguard.quotas.meter import Meter
from tenantguard.retention import Expiry
from tenantguard.settings import GatewayConfig
from tenantguard.tools.builtin import Builtin
from tenantguard.tools.registry import ToolRegistry

if TYPE_CHECKING:  # the route module imports this one
    from tenantguard.gateway.routes.models import ModelClients
    from tenantguard.webhooks.delivery import Deliverer


@dataclass(frozen=True, slots=True)
class Runtime:
    db: Database
    clock: Clock
    config: GatewayConfig
    keyring: Keyring
    sessions: Sessions
    magic_links: MagicLinks
    magic_link_floor: float
    oidc: OidcClient
    saml: SamlServiceProvider
    checkpointer: Checkpointer
    operator_access: OperatorAccess
    sentinel: Sentinel
    meter: Meter  # quotas, rate limits and budgets: the one way anything is counted
    tools: ToolRegistry
    executors: dict[str, Builtin]
    egress: EgressPolicy  # the tenants' outbound calls (tools): the platform's default today
    mailer: Mailer  # sign-in links and the messaging tool's mail
    mail_from: str
    prices: dict[str, Price]  # what models cost, for spend budgets
    data_root: Path  # tenants' workspaces live under <data_root>/orgs/<tenant_id>/
    model_clients: ModelClients  # model calls' egress clients, one per tenant and policy
    deliverer: Deliverer  # outbound webhooks: due deliveries sent by a periodic pass
    artifacts: Artifacts  # tenants' files: sealed, stored, downloaded by signed URLs only
    purger: Purger  # a tenant's complete removal (operators' API, the CLI)
    expiry: Expiry  # the retention policies' expiry job (a periodic pass)
    evidence_test_results: Path | None = None
    workspace_max_bytes: int = 100 * 1_048_576  # each tenant's workspace: files' bytes
    workspace_max_entries: int = 10_000  # and its files and directories
    idempotency_retention: timedelta = DEFAULT_RETENTION  # how long a kept answer replays
    # Vault reads on hot paths (a model provider's key): audited once a minute per use.
    secret_reads: RecentReads = field(default_factory=RecentReads)


def runtime(request: Request) -> Runtime:
    found = getattr(request.app.state, "runtime", None)
    if not isinstance(found, Runtime):  # the lifespan did not finish: refuse, don't guess
        raise ServiceUnavailable()
    return found


def request_id(request: Request) -> str:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else "unknown"

"""What one run may do: the agent's tool grants, intersected with the tenant's and with the
deployment's registry, frozen when the run starts. Pure.

A grant names a tool and, for each constrained argument kind, the values it allows (domains,
with `*.example.com` for subdomains; recipients, exact and case-insensitive). A run keeps the
grants of both layers (the agent's and the tenant's) and a value must pass every layer: that
is the intersection, without having to intersect patterns. A tool missing from either layer,
or from the registry, is not in the run. Only the tenant's layer may pre-approve a tool that
needs approval (an explicit policy rule); the agent's layer cannot.

Nothing a tool returns or a model says reaches this object: it is built once, from stored
configuration, and has no method that adds a tool or widens a layer. `narrowed` adds the
tenant's current grant as one more layer at each call, so a tenant that drops a tool, a
pre-approval or a domain takes it from running runs at once.

Threat stopped: a run's capabilities growing after it started (prompt injection, a tool
result, a model asking for more): `max_damage <= granted_capabilities`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from tenantguard.egress.check import host_pattern
from tenantguard.errors import RequestInvalid
from tenantguard.tools.registry import ToolRegistry


class GrantInvalid(RequestInvalid):
    code = "tool_grant_invalid"
    title = "Tool grant invalid"
    default_detail = "A tool grant names an unknown tool or field."


@dataclass(frozen=True, slots=True)
class ToolGrant:
    tool: str
    domains: frozenset[str] = frozenset()
    recipients: frozenset[str] = frozenset()
    preapproved: bool = False


_TOOL_NAME = re.compile(r"[a-z][a-z0-9_]{1,63}")
_RECIPIENT = re.compile(r"[^\x00-\x20\x7f]{1,320}")


def _domain(value: str) -> str:
    """A granted domain as the gate compares it: ASCII (IDNA), lower case, no trailing dot;
    anything that is not a host name (or `*.` and one) is refused."""
    try:
        return host_pattern(value)
    except ValueError as exc:
        raise GrantInvalid("A granted domain is a host name, or *. and one.") from exc


def parse_grants(document: object, *, layer: str) -> tuple[ToolGrant, ...]:
    """Grants from their JSON form: {"web_fetch": {"domains": ["docs.example.com"]}, ...}."""
    if not isinstance(document, Mapping):
        raise GrantInvalid()
    grants = []
    for name, body in document.items():
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            raise GrantInvalid()
        if not isinstance(body, Mapping):
            raise GrantInvalid()
        if set(body) - {"domains", "recipients", "preapproved"}:
            raise GrantInvalid()
        domains, recipients = body.get("domains", []), body.get("recipients", [])
        preapproved = body.get("preapproved", False)
        if not _strings(domains) or not _strings(recipients) or not isinstance(preapproved, bool):
            raise GrantInvalid()
        if preapproved and layer != "tenant":
            raise GrantInvalid("Only the tenant's policy may pre-approve a tool.")
        if not all(_RECIPIENT.fullmatch(r.strip()) for r in recipients):
            raise GrantInvalid()
        grants.append(
            ToolGrant(
                name,
                frozenset(_domain(d) for d in domains),
                frozenset(r.strip().lower() for r in recipients),
                preapproved,
            )
        )
    return tuple(grants)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, str) and 0 < len(v) <= 320 and _encodable(v) for v in value
    )


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def domain_allowed(host: str, allowed: frozenset[str]) -> bool:
    """Whether `host` (ASCII, as `egress.check.check_url` gives it) is granted."""
    host = host.lower()
    return any(
        host == pattern
        or (pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:])
        for pattern in allowed
    )


@dataclass(frozen=True, slots=True)
class RunCapabilities:
    """The frozen capabilities of one run: per tool, the grant of each layer (the agent's
    first, then the tenant's; `narrowed` adds the tenant's current one)."""

    tools: Mapping[str, tuple[ToolGrant, ...]]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.tools)

    def allows_domain(self, tool: str, host: str) -> bool:
        return all(domain_allowed(host, g.domains) for g in self.tools[tool])

    def allows_recipient(self, tool: str, recipient: str) -> bool:
        """`recipient` exactly as it will be used, case aside: nothing is stripped first (a
        value that matches only once trimmed is not the one that would be sent)."""
        value = recipient.lower()
        return all(value in g.recipients for g in self.tools[tool])

    def preapproved(self, tool: str) -> bool:
        """Every tenant layer pre-approves the tool (the agent's layer cannot)."""
        layers = self.tools[tool][1:]
        return bool(layers) and all(g.preapproved for g in layers)

    def narrowed(self, current_tenant: Iterable[ToolGrant]) -> RunCapabilities:
        """These capabilities under the tenant's policy as it is now: a tool it dropped is
        gone, and its current grant is one more layer every value must pass (never wider)."""
        now = {g.tool: g for g in current_tenant}
        return RunCapabilities(
            MappingProxyType(
                {name: (*layers, now[name]) for name, layers in self.tools.items() if name in now}
            )
        )

    def as_json(self) -> dict[str, Any]:
        """What is stored with the run (and shown to its owner), in a stable order."""
        return {
            name: [
                {
                    "domains": sorted(g.domains),
                    "recipients": sorted(g.recipients),
                    "preapproved": g.preapproved,
                }
                for g in layers
            ]
            for name, layers in sorted(self.tools.items())
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> RunCapabilities:
        tools = {
            name: tuple(
                ToolGrant(
                    name,
                    frozenset(layer["domains"]),
                    frozenset(layer["recipients"]),
                    bool(layer["preapproved"]),
                )
                for layer in layers
            )
            for name, layers in document.items()
        }
        return cls(MappingProxyType(tools))


def freeze(
    agent: Iterable[ToolGrant], tenant: Iterable[ToolGrant], registry: ToolRegistry
) -> RunCapabilities:
    """The run's capabilities: tools granted by the agent and by the tenant and registered
    in this deployment, each with both layers."""
    agent_grants = {g.tool: g for g in agent}
    tenant_grants = {g.tool: g for g in tenant}
    names = agent_grants.keys() & tenant_grants.keys() & registry.names
    return RunCapabilities(
        MappingProxyType({n: (agent_grants[n], tenant_grants[n]) for n in sorted(names)})
    )

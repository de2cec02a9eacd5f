"""The policy gate: the decision for one tool call of one run. Pure.

In order, and the first rule that fails decides:

1. `tool_not_granted`: the tool is not in the run's frozen capabilities (unknown tools too);
2. `arguments_invalid`: the arguments break the tool's JSON Schema (the paths are named,
   never the values);
3. `domain_not_allowed` / `recipient_not_allowed`: a constrained argument's value is not
   granted by every layer (a URL that does not parse has no allowed host);
4. `needs_approval`: the tool is `destructive` or `sensitive`, and there is no approval for
   this exact (run, tool, arguments) hash, nor a tenant rule pre-approving it.

Otherwise the call is allowed. Every decision carries the arguments' hash, which an approval
is bound to: an approval of one call cannot be spent on other arguments.

Quotas and budgets are checked by the caller after an `allow`, with the stores that count.

Threat stopped: a compromised model calling a tool it was not given, with arguments it was not
allowed, or approving its own dangerous call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import httpx

from tenantguard.tools.capabilities import RunCapabilities
from tenantguard.tools.registry import ArgumentConstraint, ToolRegistry

Outcome = Literal["allow", "deny", "approval"]
RULES = (
    "granted",
    "approved",
    "preapproved",
    "tool_not_granted",
    "arguments_invalid",
    "domain_not_allowed",
    "recipient_not_allowed",
    "needs_approval",
)


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    rule: str
    call_hash: str  # hex SHA-256 of the canonical (run, tool, arguments)
    paths: tuple[str, ...] = ()  # for arguments_invalid: where, never what


def call_hash(run_id: UUID, tool: str, arguments: Mapping[str, Any]) -> str:
    canonical = json.dumps(
        {"run": str(run_id), "tool": tool, "arguments": arguments},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _host(url: object) -> str | None:
    """The URL's host as the egress guard will connect to it (ASCII, as sent), or None."""
    if not isinstance(url, str):
        return None
    try:
        parsed = httpx.URL(url)
        raw = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    host = raw[:-1] if raw.endswith(".") else raw
    return host.lower() or None if parsed.scheme in ("http", "https") else None


def decide(  # noqa: PLR0911 (one return per rule, in the order the module doc lists)
    capabilities: RunCapabilities,
    registry: ToolRegistry,
    *,
    run_id: UUID,
    tool: str,
    arguments: Mapping[str, Any],
    approved: frozenset[str] = frozenset(),
) -> Decision:
    """The decision for calling `tool` with `arguments` in run `run_id`; `approved` holds
    the hashes of calls a human approved (each spendable once, by the caller)."""
    try:
        digest = call_hash(run_id, tool, arguments)
    except (TypeError, ValueError):
        return Decision("deny", "arguments_invalid", "", ("/",))
    spec = registry.get(tool)
    if spec is None or tool not in capabilities.names:
        return Decision("deny", "tool_not_granted", digest)
    if not _text_only_utf8(arguments):  # a lone surrogate cannot reach a tool (or a 500)
        return Decision("deny", "arguments_invalid", digest, ("/",))
    if errors := spec.argument_errors(dict(arguments)):
        return Decision("deny", "arguments_invalid", digest, tuple(dict.fromkeys(errors)))
    if rule := _constraint_broken(capabilities, tool, spec.constraints, arguments):
        return Decision("deny", rule, digest)
    if not spec.needs_approval:
        return Decision("allow", "granted", digest)
    if digest in approved:
        return Decision("allow", "approved", digest)
    if capabilities.preapproved(tool):
        return Decision("allow", "preapproved", digest)
    return Decision("approval", "needs_approval", digest)


def _text_only_utf8(value: object) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, Mapping):
        return all(_text_only_utf8(k) and _text_only_utf8(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_text_only_utf8(v) for v in value)
    return True


def _constraint_broken(
    capabilities: RunCapabilities,
    tool: str,
    constraints: tuple[ArgumentConstraint, ...],
    arguments: Mapping[str, Any],
) -> str | None:
    for constraint in constraints:
        value = arguments.get(constraint.argument)
        if constraint.kind == "domain":
            host = _host(value)
            if host is None or not capabilities.allows_domain(tool, host):
                return "domain_not_allowed"
            continue
        values = value if isinstance(value, list) else [value]
        if not values or not all(
            isinstance(v, str) and capabilities.allows_recipient(tool, v) for v in values
        ):
            return "recipient_not_allowed"
        if len({str(v).lower() for v in values}) != len(values):
            return "arguments_invalid"  # one mailbox twice, in two cases: one copy at most
    return None

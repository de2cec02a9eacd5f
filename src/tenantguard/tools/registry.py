"""The tool registry: every tool declares its capabilities and the JSON Schema of its
arguments, and the deployment mode decides what may exist at all. Pure.

In `saas` mode a tool that declares `shell`, `filesystem` or `code_exec` cannot be registered
(`ToolForbidden`, at registration), and `check_for_mode` refuses a registry built for another
mode, so the gateway does not start with one. In `self_hosted` mode they may exist, confined
to the tenant's workspace (`tools.workspace`).

A tool's argument constraints name top-level arguments whose values a run's grant narrows
further: a `domain` argument is a URL whose host must be granted, a `recipient` argument an
address (or a list of them) that must be granted. A constraint on an argument the schema does
not declare is refused: it could never apply.

Threat stopped: a dangerous capability existing where the deployment says it cannot, and a
tool whose arguments nobody checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import jsonschema

from tenantguard.errors import ConfigurationError

CAPABILITIES = frozenset(
    {
        "network",  # reaches other hosts (through the egress guard)
        "messaging",  # sends messages to people or systems
        "filesystem",  # reads or writes files
        "shell",  # runs commands
        "code_exec",  # runs code
        "destructive",  # deletes or overwrites data: needs an approval
        "sensitive",  # touches data a human must agree to release: needs an approval
        "memory",  # reads or writes the tenant's memory
    }
)
FORBIDDEN_IN_SAAS = frozenset({"shell", "filesystem", "code_exec"})
NEEDS_APPROVAL = frozenset({"destructive", "sensitive"})
MODES = ("saas", "self_hosted")
_NAME = re.compile(r"[a-z][a-z0-9_]{1,63}")


class ToolForbidden(ConfigurationError):
    code = "tool_forbidden"
    title = "Tool forbidden"
    default_detail = "This deployment mode does not allow a tool with these capabilities."


class ToolInvalid(ConfigurationError):
    code = "tool_invalid"
    title = "Tool invalid"
    default_detail = "The tool's declaration is not valid."


@dataclass(frozen=True, slots=True)
class ArgumentConstraint:
    argument: str
    kind: Literal["domain", "recipient"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    capabilities: frozenset[str]
    arguments: Mapping[str, Any]  # a JSON Schema (draft 2020-12) of an object
    constraints: tuple[ArgumentConstraint, ...] = ()
    _validator: Any = field(default=None, compare=False, repr=False)

    @property
    def needs_approval(self) -> bool:
        return bool(self.capabilities & NEEDS_APPROVAL)

    def argument_errors(self, arguments: object) -> list[str]:
        """Where `arguments` break the schema (JSON paths only: never the values)."""
        validator = self._validator or jsonschema.Draft202012Validator(self.arguments)
        return sorted(
            "/" + "/".join(str(p) for p in error.absolute_path)
            for error in validator.iter_errors(arguments)
        )


def tool(
    name: str,
    description: str,
    capabilities: Iterable[str],
    arguments: Mapping[str, Any],
    constraints: Iterable[ArgumentConstraint] = (),
) -> ToolSpec:
    """A checked tool declaration: a name, known capabilities, an object schema that is
    valid and closed (`additionalProperties: false`), constraints on declared arguments."""
    chosen = frozenset(capabilities)
    if not _NAME.fullmatch(name):
        raise ToolInvalid("A tool name is 2 to 64 lower-case letters, digits and underscores.")
    if chosen - CAPABILITIES:
        raise ToolInvalid(f"Unknown capabilities: {', '.join(sorted(chosen - CAPABILITIES))}.")
    try:
        jsonschema.Draft202012Validator.check_schema(arguments)
    except jsonschema.SchemaError as exc:
        raise ToolInvalid("The argument schema is not a valid JSON Schema.") from exc
    if arguments.get("type") != "object" or arguments.get("additionalProperties") is not False:
        raise ToolInvalid("Arguments are an object with additionalProperties false.")
    declared = set(arguments.get("properties", {}))
    fixed = tuple(constraints)
    if any(c.argument not in declared for c in fixed):
        raise ToolInvalid("A constraint names an argument the schema does not declare.")
    frozen_schema = MappingProxyType(dict(arguments))
    return ToolSpec(
        name,
        description,
        chosen,
        frozen_schema,
        fixed,
        jsonschema.Draft202012Validator(dict(arguments)),
    )


class ToolRegistry:
    """The tools of one deployment, for one mode."""

    def __init__(self, mode: str) -> None:
        if mode not in MODES:
            raise ConfigurationError("Unknown deployment mode.")
        self.mode = mode
        self._tools: dict[str, ToolSpec] = {}

    def register(self, spec: ToolSpec) -> None:
        if self.mode == "saas" and spec.capabilities & FORBIDDEN_IN_SAAS:
            raise ToolForbidden(
                f"The saas mode cannot register {spec.name!r}: it declares"
                f" {', '.join(sorted(spec.capabilities & FORBIDDEN_IN_SAAS))}."
            )
        if spec.name in self._tools:
            raise ToolInvalid(f"A tool named {spec.name!r} is already registered.")
        self._tools[spec.name] = spec

    def get(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._tools)

    def specs(self) -> list[ToolSpec]:
        return [self._tools[n] for n in sorted(self._tools)]


def check_for_mode(registry: ToolRegistry, mode: str) -> None:
    """At start: the registry was built for this mode, and none of its tools is forbidden in
    it (a registry is plain data; someone may have filled it by other means)."""
    if registry.mode != mode:
        raise ToolForbidden("The tool registry was built for another deployment mode.")
    if mode == "saas":
        for spec in registry.specs():
            if spec.capabilities & FORBIDDEN_IN_SAAS:
                raise ToolForbidden(f"The saas mode cannot start with the tool {spec.name!r}.")

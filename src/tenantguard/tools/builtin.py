"""The tools tenantguard ships, and what runs each: reading a memory entry, and deleting one
(destructive: it waits for a person's approval). Each executor runs in the call's tenant
transaction, as the run's caller, so every write it makes is audited with it.

Tool output is data for the model, never instructions to the gate: it is returned under
`output` with `untrusted: true`, and nothing in it is read back by the gate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from tenantguard.context import TenantContext
from tenantguard.data import memory
from tenantguard.db.pool import Connection
from tenantguard.tools.registry import ToolRegistry, ToolSpec, tool

Executor = Callable[[Connection, TenantContext, Mapping[str, Any], datetime], dict[str, Any]]
_ID = {
    "type": "string",
    "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
}

MEMORY_READ = tool(
    "memory_read",
    "Read one memory entry of the tenant by id.",
    {"memory"},
    {
        "type": "object",
        "properties": {"id": _ID},
        "required": ["id"],
        "additionalProperties": False,
    },
)
MEMORY_DELETE = tool(
    "memory_delete",
    "Delete one memory entry of the tenant by id (it can be restored; needs approval).",
    {"memory", "destructive"},
    {
        "type": "object",
        "properties": {"id": _ID},
        "required": ["id"],
        "additionalProperties": False,
    },
)


def _read(
    tx: Connection, ctx: TenantContext, args: Mapping[str, Any], _now: datetime
) -> dict[str, Any]:
    entry = memory.get(tx, ctx.tenant_id, UUID(args["id"]))
    return {"key": entry.key, "content": entry.content, "version": entry.version}


def _delete(
    tx: Connection, ctx: TenantContext, args: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    memory.delete(tx, ctx, UUID(args["id"]), now=now)
    return {"deleted": args["id"]}


BUILTIN: dict[str, tuple[ToolSpec, Executor]] = {
    MEMORY_READ.name: (MEMORY_READ, _read),
    MEMORY_DELETE.name: (MEMORY_DELETE, _delete),
}


def builtin_registry(mode: str) -> tuple[ToolRegistry, dict[str, Executor]]:
    """The registry of this deployment mode with the built-in tools, and their executors."""
    registry = ToolRegistry(mode)
    for spec, _ in BUILTIN.values():
        registry.register(spec)
    return registry, {name: run for name, (_, run) in BUILTIN.items()}

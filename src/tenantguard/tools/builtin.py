"""The tools tenantguard ships, and what runs each:

- `memory_read`, `memory_delete` (destructive: it waits for a person's approval) run in the
  call's tenant transaction, as the run's caller, so every write is audited with it;
- `web_fetch` (network; its `url` is constrained to the run's granted domains) runs after
  that transaction, through the egress guard, and follows no redirect: a redirect comes back
  as data (`redirect_to`), and fetching it is a new call that passes the gate again. Its text
  is screened for prompt-injection patterns (`tools.injection`), reported with a score;
- `send_message` (messaging; every address in `to` must be a granted recipient) also runs
  after that transaction: one mail per recipient (no address sees another), through the
  gateway's mailer, each recipient counted as a message against the `messages` quotas;
- `file_read`, `file_write` (filesystem; the write is destructive: approval, or the tenant's
  pre-approval) exist only in `self_hosted` deployments, confined to the tenant's workspace
  (`tools.workspace`).

Tool output is data for the model, never instructions to the gate: it is returned under
`output` with `untrusted: true`, and nothing in it is read back by the gate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

import httpx

from tenantguard.context import TenantContext
from tenantguard.data import memory
from tenantguard.db.pool import Connection
from tenantguard.egress.check import EgressPolicy
from tenantguard.egress.transport import egress_client
from tenantguard.errors import RequestInvalid
from tenantguard.mail import Mailer, compose
from tenantguard.tools import injection
from tenantguard.tools.registry import ArgumentConstraint, ToolRegistry, ToolSpec, tool
from tenantguard.tools.workspace import MAX_FILE_BYTES, MAX_PATH, Workspace


@dataclass(frozen=True, slots=True)
class ToolContext:
    ctx: TenantContext
    now: datetime
    tx: Connection | None  # the call's transaction, for the tools that run inside it
    egress: EgressPolicy  # what this tenant's outbound calls may reach
    mailer: Mailer | None = None  # how messages leave (the gateway's: outbox or SMTP)
    sender: str = "tenantguard@localhost"
    workspace: Workspace | None = None  # the tenant's files (self_hosted only)


Executor = Callable[[ToolContext, Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Builtin:
    spec: ToolSpec
    execute: Executor
    in_transaction: bool


# The length bounds too: a JSON Schema `$` also matches before a final newline.
_ID = {
    "type": "string",
    "minLength": 36,
    "maxLength": 36,
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


WEB_FETCH = tool(
    "web_fetch",
    "Fetch a web page from a granted domain (no redirects followed; text, at most 200 kB).",
    {"network"},
    {
        "type": "object",
        "properties": {"url": {"type": "string", "maxLength": 2048}},
        "required": ["url"],
        "additionalProperties": False,
    },
    [ArgumentConstraint("url", "domain")],
)
MAX_TEXT = 200_000
MAX_RECIPIENTS = 10
SEND_MESSAGE = tool(
    "send_message",
    "Send a plain-text mail to granted recipients (at most 10; each gets their own copy).",
    {"messaging"},
    {
        "type": "object",
        "properties": {
            "to": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_RECIPIENTS,
                "uniqueItems": True,
                "items": {
                    "type": "string",
                    "minLength": 3,
                    "maxLength": 320,
                    # One address of printable ASCII (no blank, no line break of any
                    # script), no display name, nothing a header could be split on. The
                    # look-aheads hold to the very end (a `$` also matches before a final
                    # newline).
                    "pattern": '^(?![\\s\\S]*[^!-~])(?![\\s\\S]*[<>,;:"()\\[\\]\\\\])'
                    "[^@]+@[A-Za-z0-9.-]+$",
                },
            },
            "subject": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                # No control character and no line break of any script, anywhere.
                "pattern": "^(?![\\s\\S]*[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029])",
            },
            "body": {"type": "string", "maxLength": 20_000},
        },
        "required": ["to", "subject", "body"],
        "additionalProperties": False,
    },
    [ArgumentConstraint("to", "recipient")],
)


def _tx(tool_context: ToolContext) -> Connection:
    if tool_context.tx is None:  # pragma: no cover - the route passes one for these tools
        raise RuntimeError("this tool runs inside the call's transaction")
    return tool_context.tx


def _read(tc: ToolContext, args: Mapping[str, Any]) -> dict[str, Any]:
    entry = memory.get(_tx(tc), tc.ctx.tenant_id, UUID(args["id"]))
    return {"key": entry.key, "content": entry.content, "version": entry.version}


def _delete(tc: ToolContext, args: Mapping[str, Any]) -> dict[str, Any]:
    memory.delete(_tx(tc), tc.ctx, UUID(args["id"]), now=tc.now)
    return {"deleted": args["id"]}


def _fetch(tc: ToolContext, args: Mapping[str, Any]) -> dict[str, Any]:
    policy = replace(tc.egress, max_response_bytes=min(tc.egress.max_response_bytes, 2 * MAX_TEXT))
    with egress_client(policy, follow_redirects=False) as client:
        try:
            response = client.get(args["url"], headers={"Accept": "text/*, application/json"})
            body = response.read()
        except httpx.HTTPError:
            return {"error": "unreachable"}
    try:
        text = body.decode(response.encoding or "utf-8", errors="replace")
    except (LookupError, TypeError):  # a "charset" that is not a text encoding (base64, zlib)
        text = body.decode("utf-8", errors="replace")
    screened = injection.screen(text)
    out: dict[str, Any] = {
        "status": response.status_code,
        "content_type": response.headers.get("content-type", ""),
        "text": text[:MAX_TEXT],
        "truncated": len(text) > MAX_TEXT,
        "injection": {"score": screened.score, "signals": list(screened.signals)},
    }
    location = response.headers.get("location")
    if response.is_redirect and location:
        out["redirect_to"] = str(response.url.join(location))
    return out


_PATH = {"type": "string", "minLength": 1, "maxLength": MAX_PATH}
FILE_READ = tool(
    "file_read",
    "Read a text file of the tenant's workspace (self-hosted deployments; at most 1 MiB).",
    {"filesystem"},
    {
        "type": "object",
        "properties": {"path": _PATH},
        "required": ["path"],
        "additionalProperties": False,
    },
)
FILE_WRITE = tool(
    "file_write",
    "Write a text file of the tenant's workspace, replacing it (needs approval; at most 1 MiB).",
    {"filesystem", "destructive"},
    {
        "type": "object",
        "properties": {"path": _PATH, "content": {"type": "string", "maxLength": MAX_FILE_BYTES}},
        "required": ["path", "content"],
        "additionalProperties": False,
    },
)


def _workspace(tc: ToolContext) -> Workspace:
    if tc.workspace is None:  # pragma: no cover - the route passes one in self_hosted mode
        raise RuntimeError("the filesystem tools need the tenant's workspace")
    return tc.workspace


def _file_read(tc: ToolContext, args: Mapping[str, Any]) -> dict[str, Any]:
    data = _workspace(tc).read(args["path"])
    return {"path": args["path"], "content": data.decode("utf-8", errors="replace")}


def _file_write(tc: ToolContext, args: Mapping[str, Any]) -> dict[str, Any]:
    written = _workspace(tc).write(args["path"], args["content"].encode("utf-8"))
    return {"path": args["path"], "bytes": written}


def _send(tc: ToolContext, args: Mapping[str, Any]) -> dict[str, Any]:
    if tc.mailer is None:  # pragma: no cover - the gateway always passes its mailer
        raise RuntimeError("send_message needs the gateway's mailer")
    try:  # every message is built before any is sent: none goes out if one cannot be
        messages = [
            compose(sender=tc.sender, to=address, subject=args["subject"], body=args["body"])
            for address in args["to"]
        ]
    except (ValueError, UnicodeError) as exc:  # what the schema let through and mail refuses
        raise RequestInvalid("The message cannot be sent as a mail.") from exc
    for message in messages:
        tc.mailer.send(message)
    return {"sent": len(messages)}


BUILTIN: dict[str, Builtin] = {
    MEMORY_READ.name: Builtin(MEMORY_READ, _read, in_transaction=True),
    MEMORY_DELETE.name: Builtin(MEMORY_DELETE, _delete, in_transaction=True),
    WEB_FETCH.name: Builtin(WEB_FETCH, _fetch, in_transaction=False),
    SEND_MESSAGE.name: Builtin(SEND_MESSAGE, _send, in_transaction=False),
}


# Only where the deployment mode allows the filesystem (`self_hosted`); never registered in
# `saas`, where the registry would refuse them anyway.
SELF_HOSTED: dict[str, Builtin] = {
    FILE_READ.name: Builtin(FILE_READ, _file_read, in_transaction=False),
    FILE_WRITE.name: Builtin(FILE_WRITE, _file_write, in_transaction=False),
}


def builtin_registry(mode: str) -> tuple[ToolRegistry, dict[str, Builtin]]:
    """The registry of this deployment mode with the built-in tools, and how each runs."""
    registry = ToolRegistry(mode)
    chosen = {**BUILTIN, **(SELF_HOSTED if mode == "self_hosted" else {})}
    for builtin in chosen.values():
        registry.register(builtin.spec)
    return registry, chosen

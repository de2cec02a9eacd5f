"""The PII policy on the two channels that carry no conversation: audit payloads and logs.

Both take free text from structures (an audit event's reason and payload, a log line's
fields), scan every string that is not an identifier, and apply the tenant's policy for the
channel: `strict` replaces a finding with a keyed token, `flag` keeps it and reports it.
`reversible` cannot be chosen for these channels (the policy refuses it): there is no
conversation to keep a vault for, and nobody should re-identify a log.

- **Audit.** `audit.store.append` passes every event through the screen of the transaction it
  runs in (`db.pool.ACTIVE_SCREEN`, which the database sets for its transactions). The PII
  sentinel installs one that reads the tenant's policy and token key in that same transaction,
  so audit tokens equal the tenant's strict tokens and auditors can see "the same person in
  three events". Where no sentinel is installed (a CLI command, a library caller), the
  `default_audit_screen` is strict on every class with a process key. Either way the screened
  event is what is hashed, so verification never needs a key; findings are listed under the
  payload's `_pii` member (field, class, mode, score in percent: audit payloads hold no floats).
- **Logs.** `log_processor` runs in the structlog chain after secret redaction. Log tokens use
  a key of the process: stable within a process, never equal to a model-facing token, so a log
  reader cannot link a line to a prompt. A line that names a tenant (`tenant_id`) follows that
  tenant's log-channel policy if this process has seen it within `POLICY_TTL` seconds
  (`remember_policy`); otherwise the default (strict) applies.

Threat stopped: personal data kept for years in an audit chain or a log system, where no
redaction can reach it afterwards.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from tenantguard.pii.detectors import DetectorRegistry, default_detectors
from tenantguard.pii.policy import PiiPolicy
from tenantguard.pii.redact import Finding, apply_policy

POLICY_TTL = 60.0
MAX_REMEMBERED = 10_000
PII_MEMBER = "_pii"
# Identifiers are not scanned: UUIDs, hex digests, timestamps, our own dotted names.
_IDENTIFIER = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{16,}"
    r"|\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?"
    r"|[a-z][a-z0-9_]{0,40}(?:[.:][a-z0-9_]{1,40}){1,6}"
)
_PROCESS_KEY = secrets.token_bytes(32)
_lock = threading.Lock()
_registry: DetectorRegistry | None = None


def default_registry() -> DetectorRegistry:
    global _registry  # noqa: PLW0603 (built once, on first use: the detectors are pure)
    with _lock:
        if _registry is None:
            _registry = DetectorRegistry(default_detectors())
        return _registry


@dataclass(frozen=True, slots=True)
class Tag:
    field: str
    finding: Finding

    def as_json(self) -> dict[str, object]:
        return {
            "field": self.field,
            "class": self.finding.pii_class,
            "mode": self.finding.mode,
            "score": round(self.finding.score * 100),
        }


Redactor = Callable[[str, str], tuple[str, list[Finding]]]  # (text, field) -> redacted, found


def screen_structure(value: Any, redact: Redactor, path: str = "") -> tuple[Any, list[Tag]]:
    """`value` (JSON-like) with every non-identifier string redacted, and what was found."""
    tags: list[Tag] = []
    if isinstance(value, str):
        if not value or _IDENTIFIER.fullmatch(value):
            return value, tags
        text, findings = redact(value, path)
        return text, [Tag(path, f) for f in findings]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out[key], found = screen_structure(item, redact, f"{path}.{key}" if path else str(key))
            tags.extend(found)
        return out, tags
    if isinstance(value, list | tuple):
        items = []
        for index, item in enumerate(value):
            screened, found = screen_structure(item, redact, f"{path}[{index}]")
            items.append(screened)
            tags.extend(found)
        return items, tags
    return value, tags


def has_findings(registry: DetectorRegistry, value: Any) -> bool:
    """Whether any detector finds anything in `value`, at any score (a tenant's thresholds
    may be lower than the default): asked before reading a policy or a key."""

    def probe(text: str, _field: str) -> tuple[str, list[Finding]]:
        if registry.scan(text):
            raise _Found
        return text, []

    try:
        screen_structure(value, probe)
    except _Found:
        return True
    return False


class _Found(Exception):
    """Raised inside `has_findings` at the first finding, to stop the walk."""


def redactor(
    registry: DetectorRegistry, policy: PiiPolicy, channel: str, token_key: bytes
) -> Redactor:
    def redact(text: str, _field: str) -> tuple[str, list[Finding]]:
        return apply_policy(text, registry.scan(text), policy, channel, token_key=token_key)

    return redact


def screen_event(
    reason: str, payload: dict[str, Any], redact: Redactor
) -> tuple[str, dict[str, Any]]:
    """An audit event's reason and payload, screened; findings listed under `_pii`."""
    new_reason, reason_tags = screen_structure(reason, redact, "reason")
    body = {k: v for k, v in payload.items() if k != PII_MEMBER}
    new_payload, payload_tags = screen_structure(body, redact, "payload")
    tags = [*reason_tags, *payload_tags]
    if tags:
        new_payload[PII_MEMBER] = [t.as_json() for t in tags]
    return str(new_reason), new_payload


def default_audit_screen(
    _conn: object, _tenant_id: UUID, reason: str, payload: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Strict on every class, with the process key: where no sentinel is installed."""
    return screen_event(
        reason, payload, redactor(default_registry(), PiiPolicy(), "audit", _PROCESS_KEY)
    )


class _Policies:
    """Tenants' policies as this process last read them, for the log channel. Bounded; an
    entry older than `POLICY_TTL` is gone, and the default (strict) applies again."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, PiiPolicy]] = {}
        self._lock = threading.Lock()

    def remember(self, tenant_id: UUID, policy: PiiPolicy) -> None:
        with self._lock:
            if len(self._entries) >= MAX_REMEMBERED:
                self._entries.clear()  # rare; forgetting only makes logs stricter
            self._entries[str(tenant_id)] = (time.monotonic(), policy)

    def get(self, tenant_id: object) -> PiiPolicy:
        with self._lock:
            entry = self._entries.get(str(tenant_id))
        if entry is None or time.monotonic() - entry[0] > POLICY_TTL:
            return PiiPolicy()
        return entry[1]


_policies = _Policies()


def remember_policy(tenant_id: UUID, policy: PiiPolicy) -> None:
    _policies.remember(tenant_id, policy)


# Log fields that are ours and structural: never scanned. `event` is scanned: for the
# stdlib's records (uvicorn, libraries) it is the free-text message.
_LOG_STRUCTURAL = frozenset(
    {"level", "logger", "timestamp", "request_id", "tenant_id", "exception_type"}
)


def log_processor(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> dict[str, Any]:
    """The log channel: every field but the structural ones, screened (see module doc)."""
    policy = (
        _policies.get(event_dict.get("tenant_id")) if "tenant_id" in event_dict else PiiPolicy()
    )
    redact = redactor(default_registry(), policy, "log", _PROCESS_KEY)
    out: dict[str, Any] = {}
    found: list[Tag] = []
    for key, value in event_dict.items():
        if key in _LOG_STRUCTURAL:
            out[key] = value
            continue
        out[key], tags = screen_structure(value, redact, key)
        found.extend(tags)
    if found:
        out["pii"] = sorted({f"{t.field}:{t.finding.pii_class}" for t in found})
    return out

"""The PII policy on the two channels that carry no conversation: audit payloads and logs.

Both take free text from structures (an audit event's reason and payload, a log line's
fields), scan every string that is not an identifier, and apply the tenant's policy for the
channel: `strict` replaces a finding with a keyed token, `flag` keeps it and reports it.
`reversible` cannot be chosen for these channels (the policy refuses it): there is no
conversation to keep a vault for, and nobody should re-identify a log.

- **Audit.** `audit.store.append` passes every event (its reason, target, actor and request
  ids, and its payload, keys and long numbers included) through the screen of the transaction
  it runs in (`db.pool.ACTIVE_SCREEN`, which the database sets for its transactions). The PII
  sentinel installs one that reads the tenant's policy and token key in that same transaction,
  so audit tokens equal the tenant's strict tokens and auditors can see "the same person in
  three events". Where no sentinel is installed (a CLI command, a library caller), the
  `default_audit_screen` is strict on every class with a process key per tenant. Either way
  the screened event is what is hashed, so verification never needs a key; findings are
  listed under the payload's `_pii` member (field, class, mode, score in percent: audit
  payloads hold no floats).
- **Logs.** `log_processor` runs in the structlog chain after secret redaction. Log tokens use
  a key of the process (per tenant when the line names one): stable within a process, never
  equal to a model-facing token, so a log reader cannot link a line to a prompt. A line that
  names a tenant (`tenant_id`) follows that tenant's log-channel policy if this process has
  read it, committed, within `POLICY_TTL` seconds (`remember_policy`); otherwise the default
  (strict) applies.

Threat stopped: personal data kept for years in an audit chain or a log system, where no
redaction can reach it afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
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
# Identifiers are not scanned: UUIDs, timestamps, and hex digests (32 or more hex characters,
# at least one a letter, so that no digit run of a card or phone number hides as one). Every
# other string is, dotted names and numbers included: values decide, not shapes.
_IDENTIFIER = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?=[0-9]*[a-fA-F])[0-9a-fA-F]{32,}"
    r"|\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?"
)
SMALLEST_SCREENED_INT = 10**6  # shorter numbers carry no class's value
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
    """`value` (JSON-like) with every string that is not an identifier redacted, mapping keys
    and long integers included (an integer with a finding becomes its redacted text), and
    what was found."""
    if isinstance(value, str):
        return _screen_text(value, redact, path)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and abs(value) >= SMALLEST_SCREENED_INT
    ):
        text, found = _screen_text(str(value), redact, path)
        return (text if found else value), found
    tags: list[Tag] = []
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            new_key, key_tags = screen_structure(key, redact, f"{path}{{key}}")
            field = f"{path}.{new_key}" if path else str(new_key)
            out[new_key], found = screen_structure(item, redact, field)
            tags.extend([*key_tags, *found])
        return out, tags
    if isinstance(value, list | tuple):
        items = []
        for index, item in enumerate(value):
            screened, found = screen_structure(item, redact, f"{path}[{index}]")
            items.append(screened)
            tags.extend(found)
        return items, tags
    return value, tags


def _screen_text(value: str, redact: Redactor, path: str) -> tuple[str, list[Tag]]:
    if not value or _IDENTIFIER.fullmatch(value):
        return value, []
    text, findings = redact(value, path)
    return text, [Tag(path, f) for f in findings]


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


AuditFields = dict[str, str]  # reason, target_id, actor_id, request_id: free text too


def screen_event(
    fields: AuditFields, payload: dict[str, Any], redact: Redactor
) -> tuple[AuditFields, dict[str, Any]]:
    """An audit event's text fields and payload, screened; findings listed under `_pii`
    (a payload's own `_pii` member is dropped: findings cannot be forged)."""
    new_fields: AuditFields = {}
    tags: list[Tag] = []
    for name, text in fields.items():
        screened, found = screen_structure(text, redact, name)
        new_fields[name] = str(screened)
        tags.extend(found)
    body = {k: v for k, v in payload.items() if k != PII_MEMBER}
    new_payload, payload_tags = screen_structure(body, redact, "payload")
    tags.extend(payload_tags)
    if tags:
        new_payload[PII_MEMBER] = [t.as_json() for t in tags]
    return new_fields, new_payload


def tenant_process_key(tenant_id: UUID) -> bytes:
    """This process's token key for one tenant: tokens stable within the process and the
    tenant, and unlinkable across tenants."""
    return hmac.new(_PROCESS_KEY, tenant_id.bytes, hashlib.sha256).digest()


def default_audit_screen(
    _conn: object, tenant_id: UUID, fields: AuditFields, payload: dict[str, Any]
) -> tuple[AuditFields, dict[str, Any]]:
    """Strict on every class, with a process key per tenant: where no sentinel is installed."""
    key = tenant_process_key(tenant_id)
    return screen_event(fields, payload, redactor(default_registry(), PiiPolicy(), "audit", key))


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


# Log fields that are ours and structural: never scanned. `event` is scanned (for the stdlib's
# records it is the free-text message), and so are `tenant_id` and `request_id`, which a
# caller or a client could fill with anything.
_LOG_STRUCTURAL = frozenset({"level", "logger", "timestamp", "exception_type"})
LOG_FINDINGS = "pii"


def _as_uuid(value: object) -> UUID | None:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def log_processor(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> dict[str, Any]:
    """The log channel: every field but the structural ones, screened (see module doc). A
    caller's own `pii` field is kept as `pii_caller`: findings cannot be forged."""
    tenant = _as_uuid(event_dict.get("tenant_id"))
    policy = _policies.get(tenant) if tenant is not None else PiiPolicy()
    key = tenant_process_key(tenant) if tenant is not None else _PROCESS_KEY
    redact = redactor(default_registry(), policy, "log", key)
    out: dict[str, Any] = {}
    found: list[Tag] = []
    for name, value in event_dict.items():
        if name in _LOG_STRUCTURAL:
            out[name] = value
            continue
        screened, tags = screen_structure(value, redact, name)
        out[f"{LOG_FINDINGS}_caller" if name == LOG_FINDINGS else name] = screened
        found.extend(tags)
    if found:
        out[LOG_FINDINGS] = sorted({f"{t.field}:{t.finding.pii_class}" for t in found})
    return out

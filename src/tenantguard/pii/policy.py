"""What happens to personal data, per tenant, per class, per channel: policy as data. Pure.

Each (class, channel) has a mode:

- `strict`: replaced by a non-reversible token, keyed and stable within a tenant (the model
  still sees "the same person twice", nobody can get the value back);
- `reversible`: replaced by a token whose original is kept, sealed under the tenant's keys;
  re-identification needs a capability and is audited;
- `flag`: passed through unchanged, reported with its class and score.

A class also has a minimum confidence below which its findings are ignored. The default policy
is strict everywhere; credentials are strict on every channel whatever a policy says (a policy
that tries otherwise is refused, not quietly corrected).

Threat stopped: personal data leaving on a channel where the tenant did not allow it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from tenantguard.errors import RequestInvalid

Mode = Literal["strict", "reversible", "flag"]
Channel = Literal["prompt", "completion", "tool_input", "tool_output", "log", "audit"]
MODES: tuple[str, ...] = get_args(Mode)
CHANNELS: tuple[str, ...] = get_args(Channel)
ALWAYS_STRICT = frozenset({"credential"})
# No conversation, so no vault: nobody re-identifies an audit event or a log line.
NOT_REVERSIBLE_ON = frozenset({"log", "audit"})
DEFAULT_MIN_CONFIDENCE = 0.5


class PolicyInvalid(RequestInvalid):
    code = "pii_policy_invalid"
    title = "PII policy invalid"
    default_detail = "The PII policy names an unknown class, channel or mode, or weakens one."


@dataclass(frozen=True, slots=True)
class PiiPolicy:
    """Modes by (class, channel), minimum confidences by class; anything not named is strict
    (and needs the default confidence)."""

    modes: Mapping[tuple[str, str], str] = field(default_factory=lambda: MappingProxyType({}))
    min_confidence: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def mode(self, pii_class: str, channel: str) -> str:
        if pii_class in ALWAYS_STRICT:
            return "strict"
        return self.modes.get((pii_class, channel), "strict")

    def threshold(self, pii_class: str) -> float:
        return self.min_confidence.get(pii_class, DEFAULT_MIN_CONFIDENCE)


def parse_policy(document: Mapping[str, Any], *, classes: Iterable[str]) -> PiiPolicy:
    """A policy from its JSON form, checked against the detectors' classes:

    {"modes": {"email": {"prompt": "reversible", "log": "strict"}},
     "min_confidence": {"us_ssn": 0.8}}
    """
    known = frozenset(classes)
    modes: dict[tuple[str, str], str] = {}
    raw_modes = document.get("modes", {})
    raw_conf = document.get("min_confidence", {})
    if set(document) - {"modes", "min_confidence"} or not isinstance(raw_modes, Mapping):
        raise PolicyInvalid()
    if not isinstance(raw_conf, Mapping):
        raise PolicyInvalid()
    for pii_class, by_channel in raw_modes.items():
        if pii_class not in known or not isinstance(by_channel, Mapping):
            raise PolicyInvalid()
        for channel, mode in by_channel.items():
            if channel not in CHANNELS or mode not in MODES:
                raise PolicyInvalid()
            if pii_class in ALWAYS_STRICT and mode != "strict":
                raise PolicyInvalid("Credentials are redacted strictly on every channel.")
            if channel in NOT_REVERSIBLE_ON and mode == "reversible":
                raise PolicyInvalid("The log and audit channels are strict or flag.")
            modes[(pii_class, channel)] = str(mode)
    confidences: dict[str, float] = {}
    for pii_class, value in raw_conf.items():
        if pii_class not in known or isinstance(value, bool) or not isinstance(value, int | float):
            raise PolicyInvalid()
        if not 0.0 <= float(value) <= 1.0:
            raise PolicyInvalid()
        if pii_class in ALWAYS_STRICT and float(value) > DEFAULT_MIN_CONFIDENCE:
            raise PolicyInvalid("Credentials are caught at the default confidence or lower.")
        confidences[pii_class] = float(value)
    return PiiPolicy(MappingProxyType(modes), MappingProxyType(confidences))

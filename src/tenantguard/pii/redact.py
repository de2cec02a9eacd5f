"""Applying a PII policy to a text: replace, keep, or flag each finding. Pure.

Strict tokens are `[CLASS_xxxxxxxxxx]`, an HMAC-SHA256 of the class and the normalised value
under the tenant's token key: the same value gives the same token within a tenant (so a model
can still tell two people apart and see one twice), another tenant's key gives another token,
and no one can compute the value back. Reversible tokens come from a vault the caller provides
(`Reversible`), which keeps the original sealed; without one, a reversible finding is refused,
never left in the clear.

Threat stopped: a redaction that leaks (part of a value, a token linkable across tenants) or
that quietly passes data through when its vault is missing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tenantguard.errors import ServiceUnavailable
from tenantguard.pii.detectors import Span
from tenantguard.pii.policy import PiiPolicy

MIN_KEY = 32
_DIGITS_ONLY = frozenset({"payment_card", "iban", "phone_number", "us_ssn", "fr_nir", "de_tax_id"})


class Reversible(Protocol):
    """A vault that keeps an original and answers its token."""

    def token_for(self, pii_class: str, value: str) -> str: ...


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    pii_class: str
    score: float
    mode: str
    token: str | None  # what replaced it (strict, reversible), None when flagged


def normalise(pii_class: str, value: str) -> str:
    """One spelling per value, so that tokens are stable across formats."""
    if pii_class in _DIGITS_ONLY:
        return "".join(c for c in value.upper() if c.isalnum())
    if pii_class == "email":
        return value.strip().lower()
    return value.strip()


def text_bytes(value: str) -> bytes:
    """UTF-8, lone surrogates included (text from JSON may carry them): never a crash."""
    return value.encode("utf-8", "surrogatepass")


def strict_token(key: bytes, pii_class: str, value: str) -> str:
    if len(key) < MIN_KEY:
        raise ValueError("a token key has at least 256 bits")
    message = pii_class.encode() + b"\x00" + text_bytes(normalise(pii_class, value))
    digest = hmac.new(key, message, hashlib.sha256).digest()
    tag = base64.b32encode(digest[:10]).decode().rstrip("=").lower()
    return f"[{pii_class.upper()}_{tag}]"


def apply_policy(
    text: str,
    spans: Sequence[Span],
    policy: PiiPolicy,
    channel: str,
    *,
    token_key: bytes,
    vault: Reversible | None = None,
) -> tuple[str, list[Finding]]:
    """`text` with each finding of at least its class's confidence replaced as the policy says
    for `channel`, and the findings. `spans` must not overlap (the registry resolves them)."""
    pieces: list[str] = []
    findings: list[Finding] = []
    position = 0
    for span in sorted(spans):
        if span.start < position:
            raise ValueError("overlapping spans: resolve them first")
        if span.score < policy.threshold(span.pii_class):
            continue
        mode = policy.mode(span.pii_class, channel)
        value = text[span.start : span.end]
        if mode == "flag":
            token = None
        elif mode == "strict":
            token = strict_token(token_key, span.pii_class, value)
        else:
            if vault is None:
                raise ServiceUnavailable("Reversible redaction needs the tenant's vault.")
            token = vault.token_for(span.pii_class, value)
        pieces.append(text[position : span.start])
        pieces.append(value if token is None else token)
        position = span.end
        findings.append(Finding(span.start, span.end, span.pii_class, span.score, mode, token))
    pieces.append(text[position:])
    return "".join(pieces), findings

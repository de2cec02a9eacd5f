"""Redaction of secrets from anything that leaves for a log line or an audit payload.

Two nets, both always on: a denylist of key names (an `authorization` field is dropped whatever
it holds) and value patterns (our API key format, JWTs, bearer and basic credentials, private
key blocks, passwords in connection URLs), so a secret that slipped into a message or an
exception text is still caught.

Threat stopped: secrets and request bodies reaching logs, where they outlive every rotation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

_SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "x_api_key",
        "api_key",
        "apikey",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "jwt",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "private_key",
        "credential",
        "credentials",
        "body",
        "request_body",
        "response_body",
        "session",
        "secret_value",
    }
)
_SENSITIVE_SUFFIXES = ("_token", "_secret", "_password", "_api_key", "_private_key")

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Our own credentials: tg_<kind>_<random+checksum>. Not anchored at a word boundary: in a
    # repr a key may follow "\n" or any letter, and a missed key costs more than a masked word.
    (re.compile(r"tg_[a-z]{2,8}_[0-9A-Za-z]{16,}"), REDACTED),
    # JWS compact serialisation (a JWT): base64url header starting with '{"'.
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL
        ),
        REDACTED,
    ),
    # [user]:password@ in URLs (database URLs, proxies, redis://:password@host).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]+@"), r"\1:" + REDACTED + "@"),
)


def is_sensitive_key(key: str) -> bool:
    normal = key.lower().replace("-", "_")
    return normal in _SENSITIVE_KEYS or normal.endswith(_SENSITIVE_SUFFIXES)


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any) -> Any:
    """A copy of `value` with sensitive keys replaced and secret-looking text masked.

    Plain JSON values keep their type. Anything else (an exception, a set, an arbitrary object)
    becomes its masked text: a renderer would otherwise print its `repr()` unmasked.
    """
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and is_sensitive_key(k) else redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return redact_text(repr(value))

"""AWS Signature Version 4 for S3-compatible servers: a pure function of the request.

    headers = sign(Request("PUT", url, {"content-type": ...}, payload_sha256), creds, now)

The canonical request is built as the specification says: the path's segments percent-encoded
once (S3 does not encode twice), the query sorted by encoded name and value, the signed
headers lowercased, trimmed and sorted, and the payload's SHA-256 (sent as
`x-amz-content-sha256`, which S3 requires). `host`, `x-amz-date` and `x-amz-content-sha256`
are always signed. No flexible checksum (`x-amz-checksum-*`) is sent: some S3-compatible
servers refuse them, and none of the operations used requires one. Tested with the published
`get-vanilla` vector and, on generated requests, against botocore's signer.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNRESERVED = "-_.~"  # with letters and digits: what is never percent-encoded


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    region: str
    service: str = "s3"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    payload_sha256: str = EMPTY_SHA256


def _encode(value: str, *, slash: bool) -> str:
    return quote(value, safe=_UNRESERVED + ("/" if slash else ""))


def canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        pairs.append((_encode(unquote(name), slash=False), _encode(unquote(value), slash=False)))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def canonical_request(request: Request, signed: dict[str, str]) -> str:
    parts = urlsplit(request.url)
    path = _encode(unquote(parts.path) or "/", slash=True)
    headers = "".join(f"{name}:{value}\n" for name, value in sorted(signed.items()))
    return "\n".join(
        (
            request.method,
            path,
            canonical_query(parts.query),
            headers,
            ";".join(sorted(signed)),
            request.payload_sha256,
        )
    )


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def signing_key(creds: Credentials, day: str) -> bytes:
    key = _hmac(("AWS4" + creds.secret_key).encode("utf-8"), day)
    for part in (creds.region, creds.service, "aws4_request"):
        key = _hmac(key, part)
    return key


def sign(request: Request, creds: Credentials, now: datetime) -> dict[str, str]:
    """The request's headers with `x-amz-date`, `x-amz-content-sha256` and `authorization`."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    host = urlsplit(request.url).netloc
    headers = {k.lower(): " ".join(v.split()) for k, v in request.headers.items()}
    headers.setdefault("host", host)
    headers["x-amz-date"] = stamp
    if creds.service == "s3":
        headers["x-amz-content-sha256"] = request.payload_sha256
    scope = f"{day}/{creds.region}/{creds.service}/aws4_request"
    digest = hashlib.sha256(canonical_request(request, headers).encode("utf-8")).hexdigest()
    to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{digest}"
    signature = hmac.new(signing_key(creds, day), to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"{ALGORITHM} Credential={creds.access_key}/{scope},"
        f" SignedHeaders={';'.join(sorted(headers))}, Signature={signature}"
    )
    return headers

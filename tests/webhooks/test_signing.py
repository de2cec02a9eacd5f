"""Webhook signatures: the Standard Webhooks test vector, tampering with the body, a header or
the timestamp, the window both ways, rotation's overlap, malformed headers; Stripe's scheme."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from tenantguard.webhooks.signing import (
    MAX_SIGNATURES,
    TOLERANCE_SECONDS,
    WebhookMalformed,
    WebhookRejected,
    WebhookSignatureInvalid,
    WebhookStale,
    new_secret,
    secret_bytes,
    sign,
    signature_header,
    verify_standard,
    verify_stripe,
)

# The Standard Webhooks reference implementations' vector (published with the specification).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_the_published_vector_signs_and_verifies() -> None:
    key = secret_bytes(VECTOR_SECRET)
    assert sign(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    headers = _headers(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_SIGNATURE)
    verified = verify_standard([key], headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)
    assert (verified.replay_key, verified.timestamp) == (VECTOR_ID, VECTOR_TIMESTAMP)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"body": VECTOR_BODY + b" "}, WebhookSignatureInvalid),
        ({"body": VECTOR_BODY.replace(b"2432232314", b"2432232315")}, WebhookSignatureInvalid),
        ({"webhook-id": VECTOR_ID + "x"}, WebhookSignatureInvalid),
        ({"webhook-timestamp": str(VECTOR_TIMESTAMP + 1)}, WebhookSignatureInvalid),
        (
            {"webhook-signature": "v1,g1hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="},
            WebhookSignatureInvalid,
        ),
        # The same bytes spelled otherwise (the padding bits of the last character).
        (
            {"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF="},
            WebhookMalformed,
        ),
        (
            {"webhook-signature": "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="},
            WebhookSignatureInvalid,
        ),
        ({"webhook-signature": ""}, WebhookMalformed),
        ({"webhook-signature": "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}, WebhookMalformed),
        ({"webhook-signature": "v1,not base64!"}, WebhookMalformed),
        (
            {"webhook-signature": " ".join([VECTOR_SIGNATURE] * (MAX_SIGNATURES + 1))},
            WebhookMalformed,
        ),
        ({"webhook-timestamp": "1614265330.0"}, WebhookMalformed),
        ({"webhook-timestamp": "-1614265330"}, WebhookMalformed),
        ({"webhook-id": ""}, WebhookMalformed),
        ({"webhook-id": "msg.1614265330"}, WebhookMalformed),
        ({"webhook-id": "msg\n"}, WebhookMalformed),
    ],
)
def test_tampering_or_a_malformed_header_is_refused_with_its_reason(
    change: dict[str, object], error: type[WebhookRejected]
) -> None:
    headers = _headers(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_SIGNATURE)
    body = change.pop("body", VECTOR_BODY)
    headers.update(change)  # type: ignore[arg-type]
    assert isinstance(body, bytes)
    with pytest.raises(error):
        verify_standard([secret_bytes(VECTOR_SECRET)], headers, body, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_malformed(missing: str) -> None:
    headers = _headers(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_SIGNATURE)
    del headers[missing]
    with pytest.raises(WebhookMalformed):
        verify_standard([secret_bytes(VECTOR_SECRET)], headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize("skew", [TOLERANCE_SECONDS + 1, -(TOLERANCE_SECONDS + 1)])
def test_a_timestamp_outside_the_window_is_stale_either_way(skew: int) -> None:
    headers = _headers(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_SIGNATURE)
    key = secret_bytes(VECTOR_SECRET)
    verify_standard([key], headers, VECTOR_BODY, now=VECTOR_TIMESTAMP + TOLERANCE_SECONDS)
    with pytest.raises(WebhookStale):
        verify_standard([key], headers, VECTOR_BODY, now=VECTOR_TIMESTAMP + skew)


def test_a_stale_timestamp_is_refused_before_any_signature_is_checked() -> None:
    """A forged old message gets `stale`, never a hint about its signature."""
    headers = _headers(VECTOR_ID, 1, "v1,AAAA")
    with pytest.raises(WebhookStale):
        verify_standard([secret_bytes(VECTOR_SECRET)], headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)


def test_rotation_overlap_sends_both_and_either_secret_verifies() -> None:
    old, new = secret_bytes(new_secret()), secret_bytes(new_secret())
    header = signature_header([old, new], "msg_1", 1_700_000_000, b"{}")
    assert len(header.split()) == 2
    for receiver_keys in ([old], [new], [old, new]):
        verify_standard(
            receiver_keys, _headers("msg_1", 1_700_000_000, header), b"{}", now=1_700_000_000
        )
    with pytest.raises(WebhookSignatureInvalid):
        verify_standard(
            [secret_bytes(new_secret())],
            _headers("msg_1", 1_700_000_000, header),
            b"{}",
            now=1_700_000_000,
        )


@pytest.mark.parametrize(
    "bad",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_!!!!",
        "whsec_" + base64.b64encode(b"short").decode(),
    ],
)
def test_secrets_are_whsec_and_enough_bytes(bad: str) -> None:
    with pytest.raises(ValueError, match=r"whsec_|bytes"):
        secret_bytes(bad)
    assert len(secret_bytes(new_secret())) == 32


def _stripe(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return digest.hexdigest()


def test_stripe_signatures_verify_over_the_raw_bytes() -> None:
    secret, body, t = "whsec_stripe_test", b'{"id": "evt_1",  "object": "event"}', 1_700_000_000
    header = f"t={t},v1={_stripe(secret, t, body)},v0=ignored"
    verified = verify_stripe([secret.encode()], header, body, now=t + 10)
    assert verified.timestamp == t
    assert verified.replay_key == verify_stripe([secret.encode()], header, body, now=t).replay_key
    reparsed = b'{"id": "evt_1", "object": "event"}'  # the same JSON, other bytes
    with pytest.raises(WebhookSignatureInvalid):
        verify_stripe([secret.encode()], header, reparsed, now=t)
    with pytest.raises(WebhookStale):
        verify_stripe([secret.encode()], header, body, now=t + TOLERANCE_SECONDS + 1)
    rotated = f"t={t},v1={'00' * 32},v1={_stripe(secret, t, body)}"
    verify_stripe([secret.encode()], rotated, body, now=t)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "v1=abcd",
        "t=1700000000",
        "t=1700000000,v1=zz",
        "t=1,t=1700000000,v1=00",
        "t=x,v1=00",
        "garbage",
    ],
)
def test_stripe_malformed_headers(header: str | None) -> None:
    with pytest.raises(WebhookMalformed):
        verify_stripe([b"whsec_stripe_test"], header, b"{}", now=1_700_000_000)

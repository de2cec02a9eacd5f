"""Streamed redaction: in any chunking, the stream's output is the redaction of the whole text,
so no value slips through the seam between two chunks."""

from __future__ import annotations

import itertools
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantguard.pii.detectors import DetectorRegistry, default_detectors
from tenantguard.pii.policy import PiiPolicy, parse_policy
from tenantguard.pii.redact import apply_policy
from tenantguard.pii.stream import StreamRedactor

REGISTRY = DetectorRegistry(default_detectors())
KEY = secrets.token_bytes(32)
JWT = "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiJhZGEifQ" * 80 + ".c2ln"  # a long token
TEXT = (
    "Dear Ada (ada@acme.example), your card 4111 1111 1111 1111 and IBAN DE89 3704 0044 0532"
    " 0130 00 are on file; SSN 123-45-6789. "
    * 3
    + f"Bearer {JWT} end. password=hunter2 "
    + "-----BEGIN PRIVATE KEY-----\n"
    + "A" * 1500
    + "\n-----END PRIVATE KEY----- done."
)


def _whole(text: str, policy: PiiPolicy) -> str:
    return apply_policy(text, REGISTRY.scan(text), policy, "completion", token_key=KEY)[0]


def _streamed(text: str, cuts: list[int], policy: PiiPolicy, hold: int) -> str:
    redactor = StreamRedactor(REGISTRY, policy, "completion", token_key=KEY, hold=hold)
    points = sorted({0, *(c % (len(text) + 1) for c in cuts), len(text)})
    out = [redactor.feed(text[a:b]) for a, b in itertools.pairwise(points)]
    out.append(redactor.finish())
    return "".join(out)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
    st.sampled_from([64, 256, 1024]),
)
def test_any_chunking_gives_the_whole_texts_redaction(cuts: list[int], hold: int) -> None:
    policy = PiiPolicy()
    assert _streamed(TEXT, cuts, policy, hold) == _whole(TEXT, policy)


@pytest.mark.parametrize("hold", [64, 1024])
def test_character_by_character_too_and_nothing_leaks(hold: int) -> None:
    """Every seam at once (this is what found a key block emitted while its end line was
    still arriving)."""
    policy = parse_policy({"modes": {"email": {"completion": "flag"}}}, classes=REGISTRY.classes)
    streamed = _streamed(TEXT, list(range(len(TEXT))), policy, hold)
    assert streamed == _whole(TEXT, policy)
    assert "ada@acme.example" in streamed  # flagged: passed through whole, as the policy says
    for secret in ("4111 1111", "DE89 3704", "123-45-6789", "hunter2", JWT[:40], "AAAAAAAA"):
        assert secret not in streamed


def test_output_flows_before_the_end() -> None:
    """Holding back is bounded: a long harmless stream is emitted as it comes."""
    redactor = StreamRedactor(REGISTRY, PiiPolicy(), "completion", token_key=KEY, hold=64)
    sent = "".join(redactor.feed("lorem ipsum dolor sit amet " * 4) for _ in range(50))
    assert len(sent) > 4000

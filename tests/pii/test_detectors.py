"""PII detectors: per class, true positives in several formats and locales and near-misses
that must not match; overlaps resolved; unknown classes refused; scans of adversarial and very
long inputs keep their spans well-formed (and finish: a catastrophic pattern would hang here)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import random
import string

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantguard.identity import apikeys
from tenantguard.pii.corpus import generate
from tenantguard.pii.detectors import (
    DetectorRegistry,
    PatternDetector,
    UnknownPiiClass,
    de_tax_id,
    default_detectors,
    fr_nir,
    iban,
    luhn,
    payment_card,
)
from tenantguard.pii.policy import DEFAULT_MIN_CONFIDENCE

REGISTRY = DetectorRegistry(default_detectors())


def found(text: str, pii_class: str) -> list[str]:
    """What the registry claims at the default confidence (what a redaction acts on)."""
    spans = REGISTRY.scan(text, [pii_class])
    return [text[s.start : s.end] for s in spans if s.score >= DEFAULT_MIN_CONFIDENCE]


def _jwt() -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': 'ada'})}.c2lnbmF0dXJl"


PEM = (
    Ed25519PrivateKey.generate()
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)
OUR_KEY = apikeys.generate("sk").secret

POSITIVES = {
    "email": [
        "ada@acme.example",
        "Ada.Lovelace+tag@sub.example.co.uk",
        "jürgen.müller@beispiel.de",  # internationalised: found whole
        "用户@例子.广告",
    ],
    "payment_card": [
        "4111 1111 1111 1111",  # Visa
        "5555-5555-5555-4444",  # Mastercard
        "2223003122003222",  # Mastercard, 2-series
        "3782 822463 10005",  # American Express
        "6011111111111117",  # Discover
        "3530111333300000",  # JCB
        "30569309025904",  # Diners Club
    ],
    "iban": [
        "DE89 3704 0044 0532 0130 00",
        "GB82 WEST 1234 5698 7654 32",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
    ],
    "us_ssn": ["123-45-6789", "123 45 6789"],
    "credential": [
        OUR_KEY,
        _jwt(),
        PEM.strip(),
        "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        "AKIAIOSFODNN7EXAMPLE",
    ],
    "ip_address": ["192.168.1.10", "8.8.8.8", "2001:db8::1", "fe80::1"],
    "uk_nino": ["AB123456C", "CE 12 34 56 A"],
    "fr_nir": ["1 84 12 76 451 089 46", "255081416802538", "1 84 12 2A 451 089 33"],
    "de_tax_id": ["86095742719", "86 095 742 719"],
    "phone_number": ["+44 20 7946 0958", "(415) 555-2671", "+33 1 42 68 53 00", "030 901820"],
    "health": ["diabetes", "Metformin", "HIV", "chimiothérapie", "schwanger"],
    "biometric": ["fingerprint", "facial recognition", "voice print", "empreintes digitales"],
    "minor": ["12 years old", "aged 9", "5th grade", "14 ans", "10 Jahre alt", "kindergarten"],
}
# Forms that need a context word, and get one in these texts.
IN_CONTEXT = {
    "passport_number": ["passport no. X1234567", "Reisepass C01X00T47", "passeport 12AB34567"],
    "date_of_birth": ["born on 12/03/1984", "DOB: 1984-03-12", "né le 12.03.1984"],
    "health": ["diagnosis code E11.9", "ICD-10 F32.1"],
}
NEAR_MISSES = {
    "email": ["ada@", "@acme.example", "ada at acme.example"],
    "payment_card": [
        "4111 1111 1111 1112",  # Luhn fails
        "1234 5678 9012 3456",  # no issuer starts so
        "9999-9999-9999-9995",  # Luhn holds, no issuer: an order number
        "411111111111",  # too short
    ],
    "iban": [
        "DE89 3704 0044 0532 0130 01",  # checksum fails
        "DE89 3704 0044 0532 0130",  # too short for Germany
        "XX00 0000 0000 0000",
    ],
    "us_ssn": [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "123-00-6789",
        "123-45-0000",
        "123456789",
    ],
    "credential": [
        OUR_KEY[:-1] + ("A" if OUR_KEY[-1] != "A" else "B"),
        "eyJub3Q.json.x",
        "sk-short",
    ],
    "ip_address": ["999.1.1.1", "1.2.3", "1.2.3.4.5", "10.0.0.256"],
    "uk_nino": ["BG123456C", "DA123456C", "AB123456E", "AO123456A"],
    "fr_nir": ["1 84 12 76 451 089 47", "3 84 12 76 451 089 46"],
    "de_tax_id": ["86095742718", "06095742719", "1234567890"],
    "phone_number": ["+44 20 7946", "555-0000-11111-2"],
    "passport_number": ["order X1234567", "ticket 12AB34567"],  # no context word: not claimed
    "date_of_birth": ["meeting on 12/03/1984", "invoice 1984-03-12"],
    "health": ["room E11.9", "seat F32", "diabetesx"],
    "biometric": ["print the finger", "face the music"],
    "minor": ["18 years old", "aged 45", "grade A", "120 years old"],
}


@pytest.mark.parametrize(
    ("pii_class", "value"), [(c, v) for c, vs in POSITIVES.items() for v in vs]
)
def test_true_positives_are_found_whole(pii_class: str, value: str) -> None:
    text = f"Note, see {value} here."
    assert found(text, pii_class) == [value]


@pytest.mark.parametrize(
    ("pii_class", "text"), [(c, t) for c, ts in IN_CONTEXT.items() for t in ts]
)
def test_context_bound_forms_are_found_after_their_context_word(pii_class: str, text: str) -> None:
    (span,) = REGISTRY.scan(text, [pii_class])
    assert text[span.end :] == ""  # the value, which ends each text
    assert span.score >= 0.85


@pytest.mark.parametrize(
    ("pii_class", "value"), [(c, v) for c, vs in NEAR_MISSES.items() for v in vs]
)
def test_near_misses_are_not_found(pii_class: str, value: str) -> None:
    assert found(f"Note, see {value} here.", pii_class) == []


def test_checksums() -> None:
    assert de_tax_id("86095742719")
    assert not de_tax_id("86095742717")
    assert fr_nir("255081416802538")
    assert not fr_nir("255081416802539")
    assert luhn("4111111111111111")
    assert not luhn("4111111111111112")
    assert payment_card("378282246310005")
    assert not payment_card("9999999999999995")
    assert iban("GB82WEST12345698765432")
    assert not iban("GB82WEST12345698765433")


def test_context_words_raise_the_score() -> None:
    plain = REGISTRY.scan("call 123-45-6789 now", ["us_ssn"])
    context = REGISTRY.scan("my SSN is 123-45-6789", ["us_ssn"])
    assert plain[0].score < context[0].score


def test_a_password_value_is_the_span_not_the_label() -> None:
    assert found("db: password = hunter2; user=ada", "credential") == ["hunter2"]


def test_an_email_inside_a_url_is_found_and_overlaps_resolve() -> None:
    text = "https://app.example/invite?to=ada@acme.example&from=192.168.1.10"
    spans = REGISTRY.scan(text)
    assert [(text[s.start : s.end], s.pii_class) for s in spans] == [
        ("ada@acme.example", "email"),
        ("192.168.1.10", "ip_address"),
    ]


def test_unknown_classes_are_refused_and_an_empty_registry_too() -> None:
    with pytest.raises(UnknownPiiClass):
        REGISTRY.scan("x", ["email", "horoscope"])
    with pytest.raises(ValueError, match="nothing"):
        DetectorRegistry([])
    assert isinstance(REGISTRY.classes, frozenset)
    assert "email" in REGISTRY.classes


def test_a_registry_holds_only_what_it_was_given() -> None:
    only_email = DetectorRegistry([d for d in default_detectors() if d.pii_class == "email"])
    with pytest.raises(UnknownPiiClass):
        only_email.scan("4111 1111 1111 1111", ["payment_card"])
    assert only_email.scan("4111 1111 1111 1111") == []
    assert any(isinstance(d, PatternDetector) for d in default_detectors())


ADVERSARIAL = st.text(
    alphabet=st.sampled_from(list("a@.-_:0123456789 eyJ=+/sk-AKIA\u00e9\u4e2d")), max_size=3000
)


@settings(max_examples=60, deadline=None)
@given(ADVERSARIAL)
def test_adversarial_text_gives_well_formed_spans(text: str) -> None:
    spans = REGISTRY.scan(text)
    for span in spans:
        assert 0 <= span.start < span.end <= len(text)
        assert 0.0 < span.score <= 1.0
    for left, right in itertools.pairwise(spans):
        assert left.end <= right.start  # no overlaps survive


def test_very_long_inputs_are_scanned_whole() -> None:
    """A megabyte of near-matches around one real address: found, at its true offset."""
    filler = ("a" * 63 + "@" + "b." * 40 + " ") * 8000
    text = filler + "ada@acme.example" + " 1.2.3." * 20000
    spans = [
        s for s in REGISTRY.scan(text, ["email"]) if text[s.start : s.end] == "ada@acme.example"
    ]
    assert [s.start for s in spans] == [len(filler)]


def test_the_prefilter_changes_no_finding() -> None:
    """Skipping a patterned detector whose pattern matches nowhere is only a shortcut: on the
    labelled corpus, identifiers and random text, both registries find exactly the same."""
    fast = DetectorRegistry(default_detectors())
    full = DetectorRegistry(default_detectors(), prefilter=False)
    rng = random.Random(7)
    alphabet = string.printable + "éß€\u00a0\u200b\uff20\uff11"
    corpus = [s.text for s in generate(1500, seed=5)]
    wide = str.maketrans({str(d): chr(0xFF10 + d) for d in range(10)} | {"@": "\uff20"})
    texts = corpus + [t.translate(wide) for t in corpus] + ["\u200b".join(t) for t in corpus[:300]]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(1500)]
    texts += [hashlib.sha256(str(i).encode()).hexdigest() for i in range(500)]
    for text in texts:
        assert fast.scan(text) == full.scan(text), text
    assert sum(bool(full.scan(t)) for t in texts) > 1000  # the texts do hold findings

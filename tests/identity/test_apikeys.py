"""API key format, generation and parsing: pure, no database."""

from __future__ import annotations

import hashlib
import math
import re
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantguard.errors import InvalidCredentials
from tenantguard.identity import apikeys

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_FORMAT = re.compile(r"tg_sk_[0-9A-Za-z]{38}")


def checksum(body: str) -> str:
    """An independent oracle for the 6-character base62 CRC32 checksum."""
    number = zlib.crc32(body.encode("ascii"))
    digits = []
    for _ in range(6):
        number, digit = divmod(number, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def make_key(random_part: str, kind: str = "sk") -> str:
    body = f"tg_{kind}_{random_part}"
    return body + checksum(body)


random_parts = st.text(alphabet=BASE62, min_size=32, max_size=32)


def refused(candidate: str) -> InvalidCredentials:
    with pytest.raises(InvalidCredentials) as caught:
        apikeys.parse(candidate)
    return caught.value


def test_generate_then_parse_round_trips() -> None:
    """parse() of a generated key returns the same hash as hash_key() and the stored hash."""
    new = apikeys.generate()
    assert apikeys.parse(new.secret) == apikeys.hash_key(new.secret) == new.key_hash
    assert new.key_hash == hashlib.sha256(new.secret.encode()).digest()


def test_generated_format() -> None:
    """A generated key is `tg_sk_` followed by 38 base62 characters, the last 6 the checksum."""
    for _ in range(50):
        secret = apikeys.generate().secret
        assert KEY_FORMAT.fullmatch(secret), secret
        assert len(secret) == 44
        assert secret[-6:] == checksum(secret[:-6])


@given(random_parts)
def test_any_well_formed_key_parses(random_part: str) -> None:
    """Every `tg_sk_` key with a correct checksum parses to its SHA-256."""
    key = make_key(random_part)
    assert apikeys.parse(key) == hashlib.sha256(key.encode()).digest()


@given(random_parts, st.data())
def test_single_substitution_is_refused(random_part: str, data: st.DataObject) -> None:
    """Changing any one character of a valid key to another base62 character is refused as
    malformed, without a lookup."""
    key = make_key(random_part)
    position = data.draw(st.integers(min_value=0, max_value=len(key) - 1), label="position")
    replacement = data.draw(
        st.sampled_from([c for c in BASE62 if c != key[position]]), label="replacement"
    )
    mutated = key[:position] + replacement + key[position + 1 :]
    assert mutated != key
    assert refused(mutated).reason == "malformed"


@pytest.mark.parametrize("kind", ["xx", "pk", "skk", "sk2"])
def test_unknown_kind_is_refused_even_with_valid_checksum(kind: str) -> None:
    """A key of an unknown kind is refused although its checksum is right for its body."""
    key = make_key("A" * 32, kind=kind)
    assert key[-6:] == checksum(key[:-6])
    assert refused(key).reason == "malformed"


def test_unknown_kind_cannot_be_generated() -> None:
    """generate() refuses a kind it does not know."""
    with pytest.raises(ValueError, match="unknown API key kind"):
        apikeys.generate("xx")


@pytest.mark.parametrize(
    "candidate",
    [
        "tg_sk_" + "a" * 10_000,
        "x" * (apikeys.MAX_KEY_LENGTH + 1),
        make_key("B" * 32) + "C",
        make_key("B" * 32) + make_key("D" * 32),
    ],
    ids=["huge", "over-max", "one-extra-char", "two-keys"],
)
def test_over_long_input_is_refused(candidate: str) -> None:
    """Input longer than a key is refused as malformed."""
    assert refused(candidate).reason == "malformed"


@pytest.mark.parametrize("pad", [(" ", ""), ("\n", ""), ("\t", ""), ("", " "), ("\r\n", "")])
def test_whitespace_around_a_key_is_refused(pad: tuple[str, str]) -> None:
    """parse() does not strip: a valid key with trailing or leading whitespace is refused."""
    key = apikeys.generate().secret
    trailing, leading = pad
    assert refused(leading + key + trailing).reason == "malformed"


@pytest.mark.parametrize(
    "candidate",
    ["", "tg_sk_", "Bearer tg_sk_x", "TG_SK_" + "A" * 38, "tg_sk_" + "é" * 38, "tg_sk-" + "A" * 38],
)
def test_garbage_is_refused(candidate: str) -> None:
    """Empty, truncated, wrongly cased or non-base62 input is refused as malformed."""
    assert refused(candidate).reason == "malformed"


def test_generated_keys_differ() -> None:
    """Two generated keys (and their hashes) never coincide."""
    keys = [apikeys.generate() for _ in range(200)]
    assert len({k.secret for k in keys}) == len(keys)
    assert len({k.key_hash for k in keys}) == len(keys)
    first, second = apikeys.generate(), apikeys.generate()
    assert first.secret != second.secret


def test_display_prefix_reveals_too_little_to_recover_the_key() -> None:
    """The display prefix is the first 10 characters; it is not a key and leaves well over
    128 bits of the key unknown."""
    new = apikeys.generate()
    prefix = new.display_prefix
    assert prefix == new.secret[:10]
    assert len(prefix) == apikeys.DISPLAY_PREFIX_LEN == 10
    assert prefix.startswith("tg_sk_")
    assert refused(prefix).reason == "malformed"
    assert apikeys.hash_key(prefix) != new.key_hash
    hidden_random_chars = 32 - (len(prefix) - len("tg_sk_"))
    assert hidden_random_chars * math.log2(62) > 128

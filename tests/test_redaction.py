"""Redaction: sensitive keys and secret-looking values are masked, ordinary data is kept."""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tenantguard.identity import apikeys
from tenantguard.redaction import REDACTED, is_sensitive_key, redact_text, redact_value

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlX2hlcmU"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n"
    "aFDrBz9vFqU4yYQn2T5l0N3m+e1pVJt1a0uW8yY0r2YbRk6Hq9b7C1k3kJYt0g==\n"
    "-----END RSA PRIVATE KEY-----"
)

keys = st.text(alphabet=BASE62, min_size=38, max_size=38).map(lambda s: f"tg_sk_{s}")
separators = st.sampled_from(list(" \t\n=:\"'()[]{},;/<>|&!?*#%@"))


@pytest.mark.parametrize(
    "key",
    [
        "authorization",
        "Authorization",
        "AUTHORIZATION",
        "Proxy-Authorization",
        "cookie",
        "Set-Cookie",
        "X-API-Key",
        "x_api_key",
        "api_key",
        "API-KEY",
        "apikey",
        "token",
        "Access-Token",
        "refresh_token",
        "id_token",
        "jwt",
        "secret",
        "Client-Secret",
        "password",
        "Password",
        "passwd",
        "private_key",
        "credentials",
        "body",
        "request_body",
        "session",
        "github_token",
        "db_password",
        "webhook_secret",
        "openai_api_key",
        "signing_private_key",
    ],
)
def test_sensitive_key_names_are_replaced(key: str) -> None:
    """A sensitive key name, in any case and with '-' or '_', has its value replaced."""
    assert is_sensitive_key(key)
    assert redact_value({key: "innocent-looking"}) == {key: REDACTED}
    assert redact_value({key: {"nested": "dict"}}) == {key: REDACTED}


@pytest.mark.parametrize(
    "key",
    ["key", "tokens_used", "token_count", "name", "path", "status", "request_id", "keyring"],
)
def test_ordinary_key_names_are_kept(key: str) -> None:
    """Non-sensitive keys such as "key" and "tokens_used" keep their values."""
    assert not is_sensitive_key(key)
    assert redact_value({key: "value 42"}) == {key: "value 42"}


def test_nested_dicts_and_lists_are_redacted_at_every_depth() -> None:
    """Redaction descends into dicts, lists and tuples, and returns a copy."""
    secret = apikeys.generate().secret
    original = {
        "outer": {"password": "p1", "items": [{"token": "t1"}, f"key {secret}", 3]},
        "pair": ("Bearer abcdefgh12345678", {"Cookie": "c=1"}),
        "count": 7,
        "flag": None,
        1: "int key",
    }
    assert redact_value(original) == {
        "outer": {"password": REDACTED, "items": [{"token": REDACTED}, f"key {REDACTED}", 3]},
        "pair": [f"Bearer {REDACTED}", {"Cookie": REDACTED}],
        "count": 7,
        "flag": None,
        1: "int key",
    }
    assert original["outer"] == {
        "password": "p1",
        "items": [{"token": "t1"}, f"key {secret}", 3],
    }


def test_our_api_key_format_is_masked() -> None:
    """A real generated key is masked wherever it sits in text."""
    secret = apikeys.generate().secret
    for text in (secret, f"key={secret}", f"'{secret}'", f"used {secret}, then failed"):
        masked = redact_text(text)
        assert secret not in masked
        assert REDACTED in masked
    assert redact_value({"note": f"x {secret}"}) == {"note": f"x {REDACTED}"}


def test_jwts_are_masked() -> None:
    """A JWT is masked, alone or inside a sentence."""
    assert redact_text(JWT) == REDACTED
    assert redact_text(f"got {JWT} from idp") == f"got {REDACTED} from idp"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bearer abcdefgh12345678", f"Bearer {REDACTED}"),
        ("authorization: bearer xyz.abc-DEF_123~+/=", f"authorization: bearer {REDACTED}"),
        ("Basic dXNlcjpwYXNzd29yZA==", f"Basic {REDACTED}"),
        ("header Token 0123456789abcdef", f"header Token {REDACTED}"),
    ],
)
def test_bearer_basic_and_token_credentials_are_masked(text: str, expected: str) -> None:
    """Bearer, Basic and token credentials keep their scheme and lose their value."""
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "kind", ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"]
)
def test_pem_private_key_blocks_are_masked(kind: str) -> None:
    """A PEM private key block is masked whole, and text around it is kept."""
    block = PEM.replace("RSA PRIVATE KEY", kind)
    body = PEM.splitlines()[1]
    masked = redact_text(f"before\n{block}\nafter")
    assert masked == f"before\n{REDACTED}\nafter"
    assert body not in masked


def test_truncated_pem_block_is_masked_to_the_end() -> None:
    """A private key block without its END line is masked to the end of the text."""
    truncated = "\n".join(PEM.splitlines()[:2])
    assert redact_text(f"oops {truncated}") == f"oops {REDACTED}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://user:pw@host/db",
            f"postgresql://user:{REDACTED}@host/db",
        ),
        (
            "postgresql+psycopg://app:s3cr:et@db.internal:5432/app?sslmode=require",
            f"postgresql+psycopg://app:{REDACTED}@db.internal:5432/app?sslmode=require",
        ),
        (
            "connect failed: https://proxyuser:hunter2@proxy:3128 refused",
            f"connect failed: https://proxyuser:{REDACTED}@proxy:3128 refused",
        ),
    ],
)
def test_passwords_in_urls_are_masked(url: str, expected: str) -> None:
    """A password in a URL's userinfo is masked; scheme, user and host are kept."""
    assert redact_text(url) == expected


def test_password_only_userinfo_is_masked() -> None:
    """A URL with a password and no user name (common for Redis) loses the password."""
    assert "s3cretpass" not in redact_text("redis://:s3cretpass@cache:6379/0")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The quick brown fox jumps over the lazy dog.",
        "tokens used: 1234, key: customer-preferences",
        "see https://example.com/path?x=1 and postgresql://host/db",
        "user@example.com wrote at 12:30",
        "tg_sk_short",
        "a bearer of bad news",
        "Basic plan",
        "BEGIN PUBLIC KEY",
        "Ünïcödé text stays ✓",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    """Text without secrets is returned unchanged."""
    assert redact_text(text) == text
    assert redact_value(text) == text


def test_non_string_scalars_pass_through() -> None:
    """Numbers, booleans and None are returned as they are."""
    for value in (0, 3.5, True, None):
        assert redact_value(value) == value


@given(
    key=keys,
    before=st.text(),
    separator=separators,
    after=st.text(),
)
def test_a_key_after_a_separator_never_survives(
    key: str, before: str, separator: str, after: str
) -> None:
    """A key after any separator character is masked whatever text surrounds it."""
    assert key not in redact_text(before + separator + key + after)


@given(key=keys, before=st.text(), after=st.text())
@example(key="tg_sk_" + "A" * 38, before="\\n", after="")
def test_a_key_never_survives_in_any_text(key: str, before: str, after: str) -> None:
    """For any generated key embedded in arbitrary text, the key never survives redaction."""
    assert key not in redact_text(before + key + after)

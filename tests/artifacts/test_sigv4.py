"""SigV4: the published vectors, and agreement with botocore's signer on generated requests."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantguard.artifacts.sigv4 import EMPTY_SHA256, Credentials, Request, sign

# AWS's SigV4 test suite, `get-vanilla`: a GET of / with only host and x-amz-date signed.
VANILLA = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,"
    " SignedHeaders=host;x-amz-date,"
    " Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
)
# The S3 documentation's example: GET /test.txt with a Range header.
S3_GET_OBJECT = (
    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
    " SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
    " Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
)


def test_the_get_vanilla_vector() -> None:
    creds = Credentials(
        "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "service"
    )
    headers = sign(
        Request("GET", "https://example.amazonaws.com/", {}),
        creds,
        datetime(2015, 8, 30, 12, 36, tzinfo=UTC),
    )
    assert headers["authorization"] == VANILLA
    assert headers["x-amz-date"] == "20150830T123600Z"


def test_the_s3_get_object_example() -> None:
    creds = Credentials(
        "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1"
    )
    headers = sign(
        Request("GET", "https://examplebucket.s3.amazonaws.com/test.txt", {"Range": "bytes=0-9"}),
        creds,
        datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert headers["authorization"] == S3_GET_OBJECT
    assert headers["x-amz-content-sha256"] == EMPTY_SHA256


def test_no_flexible_checksum_is_sent() -> None:
    headers = sign(
        Request("PUT", "http://127.0.0.1:9000/b/k", {"content-type": "application/octet-stream"}),
        Credentials("a", "s", "us-east-1"),
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert not [h for h in headers if h.startswith("x-amz-checksum")]


_SEGMENT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/?#%\x00", min_codepoint=33),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(["GET", "PUT", "DELETE", "HEAD"]),
    segments=st.lists(_SEGMENT, min_size=1, max_size=4),
    query=st.dictionaries(
        st.text(alphabet="abcdefgh-_.~", min_size=1, max_size=6),
        st.text(alphabet="abc /+=&é", max_size=6),
        max_size=3,
    ),
    payload=st.binary(max_size=64),
)
def test_agrees_with_botocore(
    method: str, segments: list[str], query: dict[str, str], payload: bytes
) -> None:
    """Whatever the path's characters and the query, the signature is botocore's."""
    path = "/bucket/" + "/".join(quote(s, safe="") for s in segments)
    url = (
        "http://127.0.0.1:9000"
        + path
        + (("?" + urlencode(query, quote_via=quote)) if query else "")
    )
    digest = hashlib.sha256(payload).hexdigest()
    theirs = AWSRequest(
        method=method, url=url, data=payload, headers={"x-amz-content-sha256": digest}
    )
    S3SigV4Auth(BotoCredentials("AK", "SK"), "s3", "eu-west-1").add_auth(theirs)
    stamp = datetime.strptime(theirs.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    ours = sign(Request(method, url, {}, digest), Credentials("AK", "SK", "eu-west-1"), stamp)
    assert ours["authorization"] == theirs.headers["Authorization"]

"""A real S3-compatible server process for the artifact tests: moto's server, started on a free
loopback port, with request signatures checked (its IAM authentication on: a request signed
with a wrong secret is refused `SignatureDoesNotMatch`). Its first three requests, unsigned,
make the user, its allow-all policy and its access key; every request after is checked."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode
from uuid import uuid4

import httpx
import pytest
from pydantic import SecretStr

from tenantguard.artifacts.sigv4 import Credentials, Request, sign
from tenantguard.artifacts.stores import S3Store, s3_policy
from tenantguard.settings import Settings


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str

    def store(self, bucket: str, *, secret: str | None = None, prefix: str = "") -> S3Store:
        creds = Credentials(self.access_key, secret or self.secret_key, "us-east-1")
        policy = s3_policy(self.endpoint, "127.0.0.1/32", 16 * 1_048_576)
        return S3Store(self.endpoint, bucket, creds, policy=policy, prefix=prefix)

    def settings(self, base: Settings, bucket: str) -> Settings:
        return base.model_copy(
            update={
                "artifact_store": "s3",
                "s3_endpoint": self.endpoint,
                "s3_bucket": bucket,
                "s3_access_key_id": self.access_key,
                "s3_secret_access_key": SecretStr(self.secret_key),
                "s3_network": "127.0.0.1/32",
                "s3_prefix": "tg/",
            }
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _iam(endpoint: str, params: dict[str, str]) -> str:
    body = urlencode({**params, "Version": "2010-05-08"}).encode()
    creds = Credentials("AKIDBOOTSTRAP", "unchecked", "us-east-1", "iam")  # not yet checked
    headers = sign(
        Request(
            "POST",
            endpoint + "/",
            {"content-type": "application/x-www-form-urlencoded"},
            hashlib.sha256(body).hexdigest(),
        ),
        creds,
        datetime.now(UTC),
    )
    answer = httpx.post(endpoint + "/", content=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.text


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    port = _free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 (this interpreter, fixed arguments)
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"INITIAL_NO_AUTH_ACTION_COUNT": "3", "PATH": "/usr/bin:/bin"},
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, Path(log).read_text()
                assert time.monotonic() < deadline, "the S3 server did not start"
                time.sleep(0.1)
        _iam(endpoint, {"Action": "CreateUser", "UserName": "tenantguard"})
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        _iam(
            endpoint,
            {
                "Action": "PutUserPolicy",
                "UserName": "tenantguard",
                "PolicyName": "all",
                "PolicyDocument": json.dumps(policy),
            },
        )
        made = _iam(endpoint, {"Action": "CreateAccessKey", "UserName": "tenantguard"})
        access = re.search(r"<AccessKeyId>(.*?)</AccessKeyId>", made)
        secret = re.search(r"<SecretAccessKey>(.*?)</SecretAccessKey>", made)
        assert access is not None
        assert secret is not None
        yield S3Server(endpoint, access[1], secret[1])
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A new bucket, made by the store's own signed request."""
    name = f"tg-{uuid4().hex[:12]}"
    store = s3_server.store(name)
    store.create_bucket()
    store.close()
    return name

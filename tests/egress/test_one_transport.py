"""One egress transport: no module of tenantguard but `egress/` opens an HTTP client or a
socket of its own, found by walking every source file (new code is covered without a list
to update). The exceptions are named, with why: the demo drives its own gateway on loopback;
mail and the audit publisher talk to infrastructure the operator configures (SMTP, NATS), never
to an address a tenant chose. And OIDC, the one outbound caller today, is refused an internal
issuer at connect."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tenantguard
from tenantguard.egress.check import EgressDenied
from tenantguard.identity import oidc
from tenantguard.identity.sessions import Sessions
from tenantguard.testing import FakeClock

SOURCE = Path(tenantguard.__file__).parent
CLIENTS = {"Client", "AsyncClient", "HTTPTransport", "AsyncHTTPTransport"}
CALLS = {"get", "post", "put", "patch", "delete", "head", "options", "request", "stream"}
FORBIDDEN_MODULES = {"urllib.request", "http.client", "requests", "aiohttp", "urllib3", "socket"}
ALLOWED = {
    "demo.py": "drives the gateway it started, on loopback",
    "mail.py": "SMTP to the operator's relay",
    "audit/publish.py": "NATS JetStream of the operator",
}


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        func = node.func if isinstance(node, ast.Call) else None
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "httpx"
            and func.attr in CLIENTS | CALLS
        ):
            found.append(f"httpx.{func.attr}() at line {func.lineno}")
        if isinstance(node, ast.ImportFrom) and node.module == "httpx":
            found += [
                f"from httpx import {a.name}" for a in node.names if a.name in CLIENTS | CALLS
            ]
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name in FORBIDDEN_MODULES]
        if isinstance(node, ast.ImportFrom) and node.module in FORBIDDEN_MODULES:
            found.append(f"from {node.module} import ...")
    return found


def test_only_the_egress_package_opens_outbound_connections() -> None:
    offenders = {}
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        if relative.startswith("egress/") or relative in ALLOWED:
            continue
        if found := _violations(path):
            offenders[relative] = found
    assert offenders == {}
    assert all((SOURCE / name).exists() for name in ALLOWED)  # no stale exception


def test_the_checker_finds_a_client_of_its_own(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import httpx\nimport socket\nfrom httpx import Client\n"
        "c: httpx.Client\nhttpx.Client()\nhttpx.get('http://x')\n"
    )
    assert len(_violations(sample)) == 4  # the annotation is not a client


def test_oidc_is_refused_an_issuer_on_an_internal_address(
    sessions_service: Sessions, clock: FakeClock
) -> None:
    client = oidc.OidcClient(sessions_service._db, sessions_service, clock=clock)
    try:
        with pytest.raises(EgressDenied) as refused:
            client._get_json("https://localhost/.well-known/openid-configuration")
        assert refused.value.rule == "private_address"
    finally:
        client.close()

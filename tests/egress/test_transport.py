"""The egress transport against real local servers: every SSRF spelling refused before any
connection reaches the internal server, redirects re-checked per hop, one resolution per hop
and a connection to exactly the address checked (no DNS rebinding), the Host header and TLS
name kept, response size and time bounded, and no proxy from the environment."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import httpx
import pytest

from tenantguard.egress.check import EgressDenied, EgressGrant, EgressPolicy, IPAddress
from tenantguard.egress.transport import egress_client, resolve
from tests.egress.conftest import Server

MakeServer = Callable[[], Server]


def _open(server: Server, **overrides: object) -> EgressPolicy:
    """The server's port allowed, but no grant: the address check is what must refuse."""
    return EgressPolicy(allowed_ports=frozenset({80, 443, server.port}), **overrides)  # type: ignore[arg-type]


def _granted(*servers: Server, **overrides: object) -> EgressPolicy:
    grant = EgressGrant.of("127.0.0.1/32", [s.port for s in servers])
    return EgressPolicy(grants=(grant,), **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",
        "127.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "localhost",
        "[::ffff:127.0.0.1]",
    ],
)
def test_every_spelling_of_loopback_is_refused_before_a_connection(
    make_server: MakeServer, host: str
) -> None:
    server = make_server()
    with egress_client(_open(server)) as client, pytest.raises(EgressDenied) as refused:
        client.get(f"http://{host}:{server.port}/")
    assert refused.value.rule == "private_address"
    assert server.connections == 0


def test_a_granted_endpoint_is_reached_at_the_checked_address_with_its_name(
    make_server: MakeServer,
) -> None:
    server = make_server()
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[IPAddress]:
        calls.append(host)
        # The first answer is what is checked and used; a later one would point elsewhere.
        return [ipaddress.ip_address("127.0.0.1" if len(calls) == 1 else "10.9.9.9")]

    with egress_client(_granted(server), resolver=rebinding) as client:
        answer = client.get(f"http://ollama.tenant.example:{server.port}/ok")
    assert answer.status_code == 200
    assert answer.text == f"hello from ollama.tenant.example:{server.port}"
    assert calls == ["ollama.tenant.example"]  # resolved once, by the guard itself
    assert server.hosts == [f"ollama.tenant.example:{server.port}"]


def test_a_name_with_one_internal_answer_is_refused(make_server: MakeServer) -> None:
    server = make_server()

    def mixed(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("127.0.0.1")]

    with egress_client(_open(server), resolver=mixed) as client, pytest.raises(EgressDenied):
        client.get(f"http://mixed.example:{server.port}/")
    assert server.connections == 0


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{internal}/",
        "http://localhost:{internal}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{internal}/",
        "file:///etc/passwd",
        "http://2130706433:{internal}/",
    ],
)
def test_a_redirect_to_an_internal_address_is_refused_at_its_hop(
    make_server: MakeServer, target: str
) -> None:
    public, internal = make_server(), make_server()
    to = target.format(internal=internal.port)
    policy = _granted(public, allowed_ports=frozenset({80, 443, internal.port}))
    with egress_client(policy) as client, pytest.raises(EgressDenied):
        client.get(f"{public.base}/redirect", params={"to": to})
    assert public.connections == 1
    assert internal.connections == 0


def test_redirects_within_the_grant_are_followed_and_loops_stop(make_server: MakeServer) -> None:
    server = make_server()
    with egress_client(_granted(server)) as client:
        followed = client.get(f"{server.base}/redirect", params={"to": f"{server.base}/ok"})
        assert followed.status_code == 200
        with pytest.raises(httpx.TooManyRedirects):
            client.get(f"{server.base}/loop")
    assert server.connections >= 2


@pytest.mark.parametrize("chunked", [False, True])
def test_responses_over_the_size_limit_are_cut(make_server: MakeServer, chunked: bool) -> None:
    server = make_server()
    policy = _granted(server, max_response_bytes=100_000)
    params = {"size": "300000", **({"chunked": "1"} if chunked else {})}
    with egress_client(policy) as client, pytest.raises(EgressDenied) as refused:
        client.get(f"{server.base}/big", params=params)
    assert refused.value.rule == "response_too_large"
    with egress_client(policy) as client:
        assert len(client.get(f"{server.base}/big", params={"size": "90000"}).content) == 90_000


def test_a_body_still_dripping_after_the_total_time_is_cut(make_server: MakeServer) -> None:
    server = make_server()
    policy = _granted(server, timeout_seconds=0.5)  # the server takes 2 s to send 40 bytes
    with egress_client(policy) as client, pytest.raises(EgressDenied) as refused:
        client.get(f"{server.base}/drip")
    assert refused.value.rule == "too_slow"


def test_no_proxy_from_the_environment_is_used(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, server = make_server(), make_server()
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, proxy.base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with egress_client(_granted(server)) as client:
        assert client.get(f"{server.base}/ok").status_code == 200
    assert proxy.connections == 0


def test_the_system_resolver_maps_numeric_spellings_and_fails_closed() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    assert resolve("2130706433", 80) == [loopback]
    assert resolve("127.1", 80) == [loopback]
    with pytest.raises(EgressDenied) as refused:
        resolve("no-such-host.invalid", 80)
    assert refused.value.rule == "resolution_failed"

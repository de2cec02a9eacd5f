"""Review of the egress guard: each test is one reproduced defect, asserting the behaviour the
guard promises (each was a strict xfail until its fix landed). Servers are on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import datetime
import gzip
import http.server
import ipaddress
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tenantguard.egress.check import (
    EgressDenied,
    EgressGrant,
    EgressPolicy,
    IPAddress,
    Target,
    address_rule,
    check_addresses,
    check_url,
)
from tenantguard.egress.transport import egress_client
from tests.egress.conftest import Server

MakeServer = Callable[[], Server]
Reply = Callable[[socket.socket, int], None]  # the accepted connection, the request's number


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def raw_server() -> Iterator[Callable[[Reply], int]]:
    """A bare TCP server on 127.0.0.1 answering every request with `reply`; its port."""
    sockets: list[socket.socket] = []

    def start(reply: Reply) -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        sockets.append(listener)
        count = [0]

        def serve(conn: socket.socket, number: int) -> None:
            with conn:
                try:
                    _read_head(conn)
                    reply(conn, number)
                except OSError:
                    pass

        def accept() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                count[0] += 1
                threading.Thread(target=serve, args=(conn, count[0]), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return int(listener.getsockname()[1])

    yield start
    for listener in sockets:
        listener.close()


def _granted(port: int, **overrides: object) -> EgressPolicy:
    grant = EgressGrant.of("127.0.0.1/32", [port])
    return EgressPolicy(grants=(grant,), **overrides)  # type: ignore[arg-type]


def _loopback(host: str, port: int) -> list[IPAddress]:
    return [ipaddress.ip_address("127.0.0.1")]


def test_a_gzip_bomb_is_cut_at_the_decompressed_size(raw_server: Callable[[Reply], int]) -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)

    def reply(conn: socket.socket, number: int) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n"
        conn.sendall(head.encode() + bomb)

    port = raw_server(reply)
    assert len(bomb) < 100_000
    with egress_client(_granted(port, max_response_bytes=100_000)) as client:
        with pytest.raises(EgressDenied) as refused:
            client.get(f"http://127.0.0.1:{port}/")
        assert refused.value.rule == "response_too_large"


def _certificate(directory: Path, name: str) -> str:
    """A CA, and a certificate for `name` alone signed by it, written to `directory`; the
    CA's PEM."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "review ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca.public_bytes(serialization.Encoding.PEM).decode()


class _KeepAlive(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b"hello " + self.headers.get("Host", "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _TLSServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def test_a_tls_connection_is_not_reused_for_a_name_its_certificate_does_not_cover(
    tmp_path: Path,
) -> None:
    ca = _certificate(tmp_path, "a.test")
    server = _TLSServer(("127.0.0.1", 0), _KeepAlive)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    port = server.server_address[1]
    trusted = ssl.create_default_context(cadata=ca)
    try:
        with (
            egress_client(_granted(port), resolver=_loopback, verify=trusted) as client,
            pytest.raises(httpx.ConnectError),  # alone, b.test is refused its certificate
        ):
            client.get(f"https://b.test:{port}/")
        with egress_client(_granted(port), resolver=_loopback, verify=trusted) as client:
            assert client.get(f"https://a.test:{port}/").status_code == 200
            with pytest.raises(httpx.ConnectError):  # so it must be after a.test too
                client.get(f"https://b.test:{port}/")
    finally:
        server.shutdown()
        server.server_close()


def test_the_host_header_is_the_checked_name(make_server: MakeServer) -> None:
    server = make_server()
    with egress_client(_granted(server.port)) as client, contextlib.suppress(EgressDenied):
        client.get(f"{server.base}/ok", headers={"Host": "admin.internal"})
    assert all(host == f"127.0.0.1:{server.port}" for host in server.hosts)


def test_headers_dripping_past_the_total_time_are_cut(
    raw_server: Callable[[Reply], int],
) -> None:
    def reply(conn: socket.socket, number: int) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: aaaaaaaaaaaa\r\nContent-Length: 0\r\n\r\n":
            conn.sendall(bytes([byte]))
            time.sleep(0.05)  # about 3 s in all, against a 0.5 s policy

    port = raw_server(reply)
    with (
        egress_client(_granted(port, timeout_seconds=0.5)) as client,
        pytest.raises((EgressDenied, httpx.TimeoutException)),
    ):
        client.get(f"http://127.0.0.1:{port}/")


def test_the_total_time_covers_every_redirect_hop(raw_server: Callable[[Reply], int]) -> None:
    def reply(conn: socket.socket, number: int) -> None:
        status = "302 Found\r\nLocation: /next" if number < 4 else "200 OK"
        conn.sendall(
            f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 8\r\n\r\n".encode()
        )
        for _ in range(8):
            conn.sendall(b"x")
            time.sleep(0.05)  # 0.4 s a hop, 1.6 s in all, against a 1 s policy

    port = raw_server(reply)
    with egress_client(_granted(port, timeout_seconds=1.0)) as client:
        with pytest.raises(EgressDenied) as refused:
            client.get(f"http://127.0.0.1:{port}/")
        assert refused.value.rule == "too_slow"


def test_metadata_in_a_mapped_scoped_form_is_never_granted() -> None:
    address = ipaddress.IPv6Address("::ffff:169.254.169.254%1")
    with pytest.raises(ValueError, match="native"):
        EgressGrant.of("::ffff:169.254.0.0/112", [80])
    with pytest.raises(ValueError, match="native"):  # built directly: checked all the same
        EgressGrant(ipaddress.IPv6Network("::ffff:169.254.0.0/112"), frozenset({80}))
    with pytest.raises(EgressDenied) as refused:
        check_addresses(Target("http", "x.example", 80), [address], EgressPolicy())
    assert refused.value.rule == "metadata_address"


def test_site_local_ipv6_is_refused() -> None:
    assert address_rule(ipaddress.ip_address("fec0::1")) == "private_address"
    with pytest.raises(EgressDenied):
        check_addresses(
            Target("https", "x.example", 443), [ipaddress.ip_address("fec0::1")], EgressPolicy()
        )


@pytest.mark.parametrize(
    "address",
    [
        "169.254.170.23",  # EKS Pod Identity Agent (credentials); its fd00:ec2::23 is listed
        "169.254.0.23",  # Tencent Cloud metadata (metadata.tencentyun.com)
        "fd00:ec2::253",  # AWS DNS in IPv6, where 169.254.169.253 is listed
    ],
)
def test_known_metadata_endpoints_cannot_be_granted(address: str) -> None:
    assert address_rule(ipaddress.ip_address(address)) == "metadata_address"
    with pytest.raises(ValueError, match="metadata"):
        EgressGrant.of(address, [80])


def test_the_gateways_own_address_is_refused_in_its_mapped_form() -> None:
    own = ipaddress.IPv4Address("8.8.4.4")  # a public address standing for the gateway's
    policy = EgressPolicy(own_addresses=frozenset({own}))
    target = Target("https", "x.example", 443)
    with pytest.raises(EgressDenied):
        check_addresses(target, [own], policy)  # refused, as it should be
    with pytest.raises(EgressDenied):
        check_addresses(target, [ipaddress.ip_address("::ffff:8.8.4.4")], policy)


def test_a_punycode_host_is_resolved_as_itself(make_server: MakeServer) -> None:
    server = make_server()
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return _loopback(host, port)

    with egress_client(_granted(server.port), resolver=resolver) as client:
        client.get(f"http://xn--strae-oqa.de:{server.port}/ok")
    assert asked == ["xn--strae-oqa.de"]


def test_port_zero_is_refused() -> None:
    with pytest.raises(EgressDenied) as refused:
        check_url("http://example.com:0/", EgressPolicy())
    assert refused.value.rule == "port"


def test_an_invalid_punycode_host_is_an_egress_refusal() -> None:
    with egress_client(EgressPolicy()) as client, pytest.raises(EgressDenied) as refused:
        client.get("http://xn--zz/")
    assert refused.value.rule == "host_invalid"

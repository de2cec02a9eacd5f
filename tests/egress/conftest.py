"""Local HTTP servers on loopback for the egress tests: each counts the connections it accepts,
so a test can prove that no byte reached an address the guard refused."""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest


@dataclass
class Server:
    port: int
    connections: int = 0
    hosts: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Threaded

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.record.hosts.append(self.headers.get("Host", ""))
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/big":
            size = int(query["size"][0])
            self.send_response(200)
            if "chunked" in query:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(size // 65536 + 1):
                    self.wfile.write(b"10000\r\n" + b"x" * 65536 + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(size))
                self.end_headers()
                self.wfile.write(b"x" * size)
        elif url.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "40")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        else:
            body = b"hello from " + self.headers.get("Host", "").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


class _Threaded(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    record: Server

    def get_request(self) -> tuple[socket.socket, Any]:
        request = super().get_request()
        self.record.connections += 1
        return request


@pytest.fixture
def make_server() -> Iterator[Callable[[], Server]]:
    started: list[_Threaded] = []

    def start() -> Server:
        server = _Threaded(("127.0.0.1", 0), _Handler)
        server.record = Server(server.server_address[1])
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        started.append(server)
        return server.record

    yield start
    for server in started:
        server.shutdown()
        server.server_close()

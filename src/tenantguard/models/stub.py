"""A local model provider stub, for tests, the demo and the benchmarks: a real HTTP server on
loopback that speaks OpenAI's chat completions (`POST /v1/chat/completions`) and Anthropic's
Messages API (`POST /v1/messages`), streaming and not.

Its completion echoes the last user message (`echo: <text>`), so a test can see what reached
the provider (a redacted prompt) and what comes back (restored tokens). Usage counts words.
It records every request it received (path, headers, body). It serves loopback only.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

STREAM_PIECE = 5  # characters per streamed delta: values split across chunks on purpose


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class StubProvider:
    port: int
    received: list[Received] = field(default_factory=list)
    fail_with: int | None = None  # answer every request with this status
    keep: bool = True  # record requests (a long benchmark run keeps none)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content", "")
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content)
    return ""


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _events(self, events: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        stub = self.server.stub
        if stub.keep:
            stub.received.append(Received(self.path, dict(self.headers.items()), body))
        if stub.fail_with is not None:
            self._send(stub.fail_with, b'{"error":{"message":"stub failure"}}')
            return
        text = "echo: " + _last_user_text(body)
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion = len(text.split())
        pieces = [text[i : i + STREAM_PIECE] for i in range(0, len(text), STREAM_PIECE)]
        if self.path == "/v1/chat/completions":
            self._openai(body, text, pieces, prompt, completion)
        elif self.path == "/v1/messages":
            self._anthropic(body, text, pieces, prompt, completion)
        else:
            self._send(404, b'{"error":{"message":"no such path"}}')

    def _openai(
        self, body: dict[str, Any], text: str, pieces: list[str], prompt: int, completion: int
    ) -> None:
        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        usage["total_tokens"] = prompt + completion
        model = body.get("model", "stub")
        if not body.get("stream"):
            answer = {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
            self._send(200, json.dumps(answer).encode())
            return

        def event(payload: dict[str, Any]) -> bytes:
            return f"data: {json.dumps(payload)}\n\n".encode()

        base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "model": model}
        events = [
            event({**base, "choices": [{"index": 0, "delta": {"content": p}}]}) for p in pieces
        ]
        events.append(
            event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        )
        include = (body.get("stream_options") or {}).get("include_usage")
        if include:
            events.append(event({**base, "choices": [], "usage": usage}))
        events.append(b"data: [DONE]\n\n")
        self._events(events)

    def _anthropic(
        self, body: dict[str, Any], text: str, pieces: list[str], prompt: int, completion: int
    ) -> None:
        model = body.get("model", "stub")
        if not body.get("stream"):
            answer = {
                "id": "msg_stub",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": prompt, "output_tokens": completion},
            }
            self._send(200, json.dumps(answer).encode())
            return

        def event(kind: str, payload: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()

        start = {"id": "msg_stub", "model": model, "usage": {"input_tokens": prompt}}
        events = [event("message_start", {"message": start})]
        events += [
            event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": p}})
            for p in pieces
        ]
        events.append(
            event(
                "message_delta",
                {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": completion}},
            )
        )
        events.append(event("message_stop", {}))
        self._events(events)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    stub: StubProvider


@contextmanager
def stub_provider() -> Iterator[StubProvider]:
    """A stub provider on 127.0.0.1 (a free port), served until the block ends."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.stub = StubProvider(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, name="stub-provider", daemon=True)
    thread.start()
    try:
        yield server.stub
    finally:
        server.shutdown()
        server.server_close()


def serve_forever(port: int) -> None:
    """Serve a stub on 127.0.0.1:`port` until the process ends, recording nothing (what
    `benchmarks/gateway.py` runs in a process of its own)."""
    server = _Server(("127.0.0.1", port), _Handler)
    server.stub = StubProvider(port, keep=False)
    server.serve_forever()

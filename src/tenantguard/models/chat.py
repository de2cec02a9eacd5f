"""Chat completions, OpenAI's shape in and out, and the translation to and from Anthropic's
Messages API. Pure: dictionaries in, dictionaries out; no I/O.

The request a caller sends is checked here (`ChatRequest`) and only the fields we know are
forwarded upstream: a field we do not know is refused, never passed along unread (it could
carry anything to the provider). A provider's answer is read defensively: a malformed one is
`ProviderFailed` (502), never a crash and never the provider's text in a problem document.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tenantguard.errors import TenantGuardError

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_ANTHROPIC_MAX_TOKENS = 1024
MAX_MESSAGES = 500
MAX_CONTENT = 1_000_000  # characters of one message's text


class ProviderFailed(TenantGuardError):
    code = "provider_failed"
    title = "Model provider failed"
    status = 502
    default_detail = "The tenant's model provider did not answer with a usable completion."


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str = Field(max_length=MAX_CONTENT)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = Field(default=None)
    name: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    tool_call_id: str | None = Field(default=None, max_length=200)
    tool_calls: list[dict[str, Any]] | None = Field(default=None, max_length=64)

    @field_validator("content")
    @classmethod
    def _bounded(cls, value: str | list[TextPart] | None) -> str | list[TextPart] | None:
        if isinstance(value, str) and len(value) > MAX_CONTENT:
            raise ValueError("message content too long")
        return value

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The OpenAI chat completion request, the fields we forward and nothing else."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "Summarise ticket T-1042."}],
                }
            ]
        },
    )
    model: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/@-]+$")
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: Literal[1] | None = None  # one choice: what is counted and audited is one completion
    user: str | None = Field(default=None, max_length=200)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and (len(value) > 4 or any(len(v) > 200 for v in value)):
            raise ValueError("at most 4 stop sequences of 200 characters")
        if isinstance(value, str) and len(value) > 200:
            raise ValueError("a stop sequence is at most 200 characters")
        return value


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_json(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total,
        }


def _count(value: object) -> int:
    return value if type(value) is int and 0 <= value <= 10**9 else 0


def openai_body(request: ChatRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The upstream body for an OpenAI-compatible provider: the caller's fields, with the
    (redacted) `messages`, and usage asked for in a stream (we count it, whatever the caller
    asked)."""
    body = request.model_dump(exclude_none=True, exclude={"messages", "stream_options"})
    body["messages"] = messages
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    return body


def anthropic_body(request: ChatRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The same request for Anthropic's Messages API: system and developer messages become
    `system`, `max_tokens` is required, stop sequences are a list."""
    system = [m["content"] for m in messages if m["role"] in ("system", "developer")]
    turns = [
        {"role": "assistant" if m["role"] == "assistant" else "user", "content": m["content"]}
        for m in messages
        if m["role"] not in ("system", "developer")
    ]
    body: dict[str, Any] = {
        "model": request.model,
        "messages": turns,
        "max_tokens": request.max_completion_tokens
        or request.max_tokens
        or DEFAULT_ANTHROPIC_MAX_TOKENS,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop is not None:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.stream:
        body["stream"] = True
    return body


_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


@dataclass(frozen=True, slots=True)
class Completion:
    """One completion, in OpenAI's terms: its text, why it finished, its usage, the
    provider's id and model."""

    text: str
    finish_reason: str | None
    usage: Usage
    id: str
    model: str

    def as_openai(self, *, created: int | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": created if created is not None else int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text},
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage.as_json(),
        }


def _mapping(value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProviderFailed()
    return value


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def parse_openai(document: object, model: str) -> Completion:
    body = _mapping(document)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ProviderFailed()
    first = _mapping(choices[0])
    message = _mapping(first.get("message", {}))
    usage = body.get("usage") if isinstance(body.get("usage"), Mapping) else {}
    assert isinstance(usage, Mapping)  # noqa: S101 (just checked)
    return Completion(
        _text(message.get("content")),
        first.get("finish_reason") if isinstance(first.get("finish_reason"), str) else None,
        Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))),
        _text(body.get("id")) or "chatcmpl-tenantguard",
        _text(body.get("model")) or model,
    )


def parse_anthropic(document: object, model: str) -> Completion:
    body = _mapping(document)
    content = body.get("content")
    if not isinstance(content, list):
        raise ProviderFailed()
    text = "".join(
        _text(block.get("text"))
        for block in content
        if isinstance(block, Mapping) and block.get("type") == "text"
    )
    usage = body.get("usage") if isinstance(body.get("usage"), Mapping) else {}
    assert isinstance(usage, Mapping)  # noqa: S101 (just checked)
    return Completion(
        text,
        _FINISH.get(_text(body.get("stop_reason"))),
        Usage(_count(usage.get("input_tokens")), _count(usage.get("output_tokens"))),
        _text(body.get("id")) or "chatcmpl-tenantguard",
        _text(body.get("model")) or model,
    )


@dataclass
class StreamEvent:
    """One piece of a streamed completion, provider-neutral: text, a finish reason, usage."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


def sse_data(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream (`event:` defaults to "message")."""
    event, data = "message", list[str]()
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", list[str]()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    if data:
        yield event, "\n".join(data)


def _json(data: str) -> Mapping[str, Any]:
    try:
        return _mapping(json.loads(data))
    except ValueError as exc:
        raise ProviderFailed() from exc


def openai_events(pairs: Iterator[tuple[str, str]]) -> Iterator[StreamEvent]:
    for _, data in pairs:
        if data == "[DONE]":
            return
        chunk = _json(data)
        out = StreamEvent()
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            out.usage = Usage(
                _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
            )
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
            delta = choices[0].get("delta")
            if isinstance(delta, Mapping):
                out.text = _text(delta.get("content"))
            reason = choices[0].get("finish_reason")
            out.finish_reason = reason if isinstance(reason, str) else None
        yield out


def anthropic_events(pairs: Iterator[tuple[str, str]]) -> Iterator[StreamEvent]:
    prompt = 0
    for event, data in pairs:
        chunk = _json(data)
        kind = _text(chunk.get("type")) or event
        if kind == "message_start":
            message = chunk.get("message")
            usage = message.get("usage") if isinstance(message, Mapping) else None
            prompt = _count(usage.get("input_tokens")) if isinstance(usage, Mapping) else 0
        elif kind == "content_block_delta":
            delta = chunk.get("delta")
            if isinstance(delta, Mapping) and delta.get("type") == "text_delta":
                yield StreamEvent(text=_text(delta.get("text")))
        elif kind == "message_delta":
            delta = chunk.get("delta")
            usage = chunk.get("usage")
            reason = _text(delta.get("stop_reason")) if isinstance(delta, Mapping) else ""
            output = _count(usage.get("output_tokens")) if isinstance(usage, Mapping) else 0
            yield StreamEvent(finish_reason=_FINISH.get(reason), usage=Usage(prompt, output))
        elif kind == "message_stop":
            return
        elif kind == "error":
            raise ProviderFailed()


def chunk(completion_id: str, model: str, created: int, **delta: Any) -> str:
    """One OpenAI stream chunk as a server-sent event."""
    finish = delta.pop("finish_reason", None)
    usage = delta.pop("usage", None)
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if usage is not None
        else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


class TokenRestorer:
    """Reversible PII tokens of one request back to their originals, in a text that arrives in
    pieces: a token split across two pieces is held back until it is whole. Only the tokens of
    `originals` (the ones this request's prompt was given) are restored; anything else passes
    as it is."""

    _LONGEST = 64  # "[" + class + "_REV_" + 16 characters + "]" is well under this

    def __init__(self, originals: Mapping[str, str]) -> None:
        self._originals = dict(originals)
        self._held = ""
        self.restored = 0

    def _replace(self, text: str) -> str:
        for token, original in self._originals.items():
            if token in text:
                self.restored += text.count(token)
                text = text.replace(token, original)
        return text

    def feed(self, piece: str) -> str:
        if not self._originals:
            return piece
        text = self._held + piece
        cut = text.rfind("[")
        if cut != -1 and "]" not in text[cut:] and len(text) - cut < self._LONGEST:
            text, self._held = text[:cut], text[cut:]
        else:
            self._held = ""
        return self._replace(text)

    def finish(self) -> str:
        text, self._held = self._held, ""
        return self._replace(text)

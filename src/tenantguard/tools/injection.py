"""Screening fetched text for prompt-injection patterns. Pure.

Fetched content is data: the gate never reads it, so nothing in it can change a run's
capabilities whatever it says. The screen only reports, for the model's caller and the audit,
how much the text looks like instructions aimed at a model: a score from 0 to 1 and the names
of the signals found (never the matched text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CREDENTIAL_WORDS = r"(?:api[_ -]?keys?|passwords?|credentials?|secrets?|tokens?)"
_REVEAL = r"(?:reveal|print|show|send|include|output)"


def _pattern(*parts: str) -> re.Pattern[str]:
    return re.compile("(?i)" + "".join(parts))


_SIGNALS: tuple[tuple[str, re.Pattern[str], float], ...] = (
    (
        "override",
        _pattern(
            r"\b(?:ignore|disregard|forget)\b.{0,40}\b(?:previous|prior|above|all|earlier)\b",
            r".{0,20}\b(?:instructions?|rules|prompts?|messages?)",
        ),
        0.5,
    ),
    ("role_play", _pattern(r"\b(?:you are now|act as|pretend to be|from now on you)\b"), 0.25),
    (
        "system_prompt",
        _pattern(r"\b(?:system prompt|developer message|hidden instructions?)\b"),
        0.25,
    ),
    (
        "exfiltration",
        _pattern(
            r"\b(?:send|post|upload|forward|exfiltrate|leak)\b.{0,60}\b(?:to|at)\b.{0,20}",
            r"(?:https?://|\S{1,64}@\S{1,255})",
        ),
        0.4,
    ),
    (
        "secrets",
        _pattern(
            rf"\b{_CREDENTIAL_WORDS}\b.{{0,40}}\b{_REVEAL}\b",
            rf"|\b{_REVEAL}\b.{{0,40}}\b{_CREDENTIAL_WORDS}\b",
        ),
        0.3,
    ),
    (
        "tool_call",
        _pattern(r"\b(?:call|invoke|run|use)\b.{0,20}\b(?:tool|function|shell|command)\b"),
        0.2,
    ),
    ("hidden_text", _pattern("[\u200b\u200c\u200d\u2060\ufeff]|<!--|display:\\s{0,3}none"), 0.2),
    (
        "approval",
        _pattern(r"\b(?:approve|authori[sz]e)d?\b.{0,30}\b(?:this|the) (?:call|request|action)\b"),
        0.3,
    ),
)


@dataclass(frozen=True, slots=True)
class Screened:
    score: float  # 0..1: how much the text reads as instructions to a model
    signals: tuple[str, ...]


def screen(text: str, *, limit: int = 200_000) -> Screened:
    sample = text[:limit]
    found = [(name, weight) for name, pattern, weight in _SIGNALS if pattern.search(sample)]
    return Screened(min(1.0, sum(w for _, w in found)), tuple(name for name, _ in found))

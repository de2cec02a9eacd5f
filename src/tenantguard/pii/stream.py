"""Redacting a streamed completion, correct across chunk boundaries. Pure.

A value split over two chunks (`ada@ac` + `me.example`) must be redacted as one. The redactor
holds back the last `hold` characters of what it has seen, the last run of text without
whitespace (a long token may still be coming), and anything from an unfinished `-----BEGIN`
block, whose end may still come, scans the held text together with a tail of
what it already emitted (so context words and look-behinds see what came before), emits the
part that no unfinished value can reach any more, and keeps the rest. `finish` flushes it.

The output of a stream, in any chunking, is the output of redacting the whole text at once
(the tests check this for random splits).

Threat stopped: personal data slipping through in the seam between two chunks.
"""

from __future__ import annotations

import re

from tenantguard.pii.detectors import CONTEXT_WINDOW, PRIVATE_KEY_END, DetectorRegistry, Span
from tenantguard.pii.policy import PiiPolicy
from tenantguard.pii.redact import Finding, Reversible, apply_policy

DEFAULT_HOLD = 1024
MAX_HELD = 65536  # an unfinished block is not held forever: past this, it is cut anyway
_OPEN_BLOCK = "-----BEGIN"
_CLOSE_BLOCK = re.compile(PRIVATE_KEY_END)


class StreamRedactor:
    def __init__(
        self,
        registry: DetectorRegistry,
        policy: PiiPolicy,
        channel: str,
        *,
        token_key: bytes,
        vault: Reversible | None = None,
        hold: int = DEFAULT_HOLD,
    ) -> None:
        if hold < 64:
            raise ValueError("hold back at least 64 characters")
        self._registry, self._policy, self._channel = registry, policy, channel
        self._key, self._vault, self._hold = token_key, vault, hold
        self._pending = ""
        self._tail = ""  # the last characters emitted, unredacted: context for the next scan
        self._step = hold // 4
        self._next_scan = hold + self._step
        self.findings: list[Finding] = []

    def feed(self, chunk: str) -> str:
        """The redacted text that is safe to send now (possibly empty).

        A scan waits until a quarter of `hold` more text has come since the last one, and
        twice as much text when the last one could emit nothing (a long token or a key block
        still arriving): each character is scanned a bounded number of times, so a stream
        costs time linear in its length whatever its chunking. Waiting changes nothing in the
        output, only when it leaves."""
        self._pending += chunk
        if len(self._pending) < self._next_scan:
            return ""
        out = self._emit(final=False)
        held = len(self._pending)
        self._next_scan = held + self._step if out else max(held + self._step, 2 * held)
        return out

    def finish(self) -> str:
        """Everything still held, redacted."""
        return self._emit(final=True)

    def _spans(self) -> list[Span]:
        offset = len(self._tail)
        found = self._registry.scan(self._tail + self._pending)
        # A value that began in emitted text (the hold rules make this not happen) still has
        # its remaining part redacted: clipped, never dropped.
        return [
            Span(max(0, s.start - offset), s.end - offset, s.pii_class, s.score)
            for s in found
            if s.end > offset
        ]

    def _emit(self, *, final: bool) -> str:
        spans = self._spans()
        cut = len(self._pending) if final else max(0, len(self._pending) - self._hold)
        if not final:
            # A run without whitespace that reaches the end may be a long token still coming
            # (a JWT, a key); an opened PEM block may still be waiting for its end line.
            last_space = max(self._pending.rfind(c) for c in " \t\r\n")
            if len(self._pending) - (last_space + 1) < MAX_HELD:
                cut = min(cut, last_space + 1)
            opened = self._pending.rfind(_OPEN_BLOCK)
            closed = opened != -1 and _CLOSE_BLOCK.search(self._pending, opened) is not None
            if opened != -1 and not closed and len(self._pending) - opened < MAX_HELD:
                cut = min(cut, opened)  # until its whole end line is here
        for span in spans:  # never cut through a value; nor emit one that began in the tail
            if span.start < cut < span.end:
                cut = span.start
        cut = max(0, cut)
        inside = [s for s in spans if s.end <= cut]
        text, found = apply_policy(
            self._pending[:cut],
            inside,
            self._policy,
            self._channel,
            token_key=self._key,
            vault=self._vault,
        )
        self.findings.extend(found)
        emitted = self._pending[:cut]
        self._tail = (self._tail + emitted)[-CONTEXT_WINDOW * 2 :]
        self._pending = self._pending[cut:]
        return text

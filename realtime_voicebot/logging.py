"""Structured logging: one place configures structlog for the whole process.

Console output for people on a TTY, JSON lines for machines (``--log-format json`` or when
stderr is not a terminal with ``auto``). Logs go to stderr so stdout stays the conversation.
Every line is redacted (`realtime_voicebot.redact`): event fields, exception tracebacks and
stdlib log records alike; this is not optional.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import ExceptionRenderer, ExcInfo

from realtime_voicebot.redact import redact, redact_processor

Processor = Callable[[Any, str, MutableMapping[str, Any]], Any]
_extra_processors: list[Processor] = []


def add_processor(processor: Processor) -> None:
    """Register a processor that runs on every event before rendering (e.g. redaction)."""
    _extra_processors.append(processor)


def configure_logging(
    level: str = "INFO", log_format: str = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger once, for console or JSON output."""
    out = stream or sys.stderr
    use_json = log_format == "json" or (log_format == "auto" and not out.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(),
            # Locals in a traceback can hold secrets; what is left is redacted as well.
            exception_formatter=_redacted(structlog.dev.RichTracebackFormatter(show_locals=False)),
        )
    )
    numeric = logging.getLevelName(level.upper())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info if use_json else _noop,
        *_extra_processors,
        redact_processor,  # last before rendering: nothing added later escapes it
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(_RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=numeric, handlers=[handler], force=True)
    for noisy in ("websockets", "httpx", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


class _RedactingFormatter(logging.Formatter):
    """Stdlib records (websockets, httpx, openai) are redacted like structlog events."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _redacted(formatter: ExceptionRenderer) -> ExceptionRenderer:
    def render(sio: TextIO, exc_info: ExcInfo) -> None:
        buffer = io.StringIO()
        formatter(buffer, exc_info)
        sio.write(redact(buffer.getvalue()))

    return render


def _noop(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event_dict


def get_logger(name: str) -> Any:
    """A structlog logger bound to a component name."""
    return structlog.get_logger(component=name)

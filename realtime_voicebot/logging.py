"""Structured logging: one place configures structlog for the whole process.

Console output for people on a TTY, JSON lines for machines (``--log-format json`` or when
stderr is not a terminal with ``auto``). Logs go to stderr so stdout stays the conversation.
Every line is redacted (`realtime_voicebot.redact`): event fields, exception tracebacks and
stdlib log records alike; this is not optional. A field's text is cut to `MAX_FIELD_CHARS`
(a server's code or message can be any length), and on the console stripped of escape
sequences and control characters (`realtime_voicebot.ui.strip_controls`): a server's message
cannot drive the terminal through a log line either.
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
from realtime_voicebot.ui import strip_controls

Processor = Callable[[Any, str, MutableMapping[str, Any]], Any]
_extra_processors: list[Processor] = []
MAX_FIELD_CHARS = 4000
"""Longest text a log field keeps (tracebacks excepted)."""


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
        _bounded if use_json else _bounded_and_stripped,
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
        return redact(strip_controls(super().format(record), keep_newlines=True))


def _redacted(formatter: ExceptionRenderer) -> ExceptionRenderer:
    def render(sio: TextIO, exc_info: ExcInfo) -> None:
        buffer = io.StringIO()
        formatter(buffer, exc_info)
        sio.write(redact(buffer.getvalue()))

    return render


def _bounded_value(value: Any, strip: bool) -> Any:
    if isinstance(value, str):
        if len(value) > MAX_FIELD_CHARS:
            value = f"{value[:MAX_FIELD_CHARS]}… ({len(value)} chars)"
        return strip_controls(value, keep_newlines=True) if strip else value
    if isinstance(value, dict):
        return {key: _bounded_value(item, strip) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_bounded_value(item, strip) for item in value)
    return value


def _bounded(
    _: Any, __: str, event_dict: MutableMapping[str, Any], *, strip: bool = False
) -> MutableMapping[str, Any]:
    """Every field's text cut to `MAX_FIELD_CHARS` (a formatted traceback is kept whole)."""
    for key, value in event_dict.items():
        if key != "exception":
            event_dict[key] = _bounded_value(value, strip)
    return event_dict


def _bounded_and_stripped(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """`_bounded`, and escape sequences and control characters removed (console)."""
    return _bounded(logger, method, event_dict, strip=True)


def _noop(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event_dict


def get_logger(name: str) -> Any:
    """A structlog logger bound to a component name."""
    return structlog.get_logger(component=name)

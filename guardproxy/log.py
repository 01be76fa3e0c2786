"""Logging: readable lines on a terminal, JSON lines everywhere else."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from guardproxy.audit.redact import REDACTED, is_secret_field, redact_text, redact_value


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written (it may be replaced later)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def redact_event(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """A structlog processor: no credential reaches a log line.

    Fields named like a credential lose their value; every other string (the message
    included, and exception text once formatted) is scanned for credential shapes.
    """
    for key, value in event.items():
        if is_secret_field(key):
            event[key] = REDACTED
        elif isinstance(value, str):
            event[key] = redact_text(value)
        elif isinstance(value, dict | list | tuple):
            event[key] = redact_value(value)
        elif value is not None and not isinstance(value, int | float | bool):
            event[key] = redact_text(str(value))
    return event


def configure_logging(
    *, level: str = "info", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Route structlog to ``stream`` (stderr): console renderer on a TTY, else JSON."""
    output: TextIO = stream or sys.stderr
    as_json = not output.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=output.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or _CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )

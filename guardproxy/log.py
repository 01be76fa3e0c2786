"""Logging: readable lines on a terminal, JSON lines everywhere else.

Logging never raises into its caller. A line that cannot be rendered or written (a
full disk, a file size limit, a closed pipe, a processor's bug) is dropped and
counted (:func:`dropped_lines`, exported as a metric), and the caller carries on:
on the request path a failing log must never turn a deny into a forward, nor stop
the thread that records decisions. Once the destination accepts writes again,
lines flow again; nothing is retried or buffered.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections import deque
from functools import cache
from typing import Any, TextIO

import structlog

from guardproxy.redact import REDACTED, is_secret_field, redact_text, redact_value


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written (it may be replaced later)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_dropped = 0
_dropped_lock = threading.Lock()


def dropped_lines() -> int:
    """Log lines dropped since the process started because they could not be written."""
    return _dropped


def _drop() -> None:
    global _dropped  # noqa: PLW0603 - one counter for the process, as logging is
    with _dropped_lock:
        _dropped += 1


class _LineLogger:
    """structlog's final logger: writes one rendered line, and never raises."""

    def __init__(self, stream: TextIO | _CurrentStderr) -> None:
        self._stream = stream
        self._lock = threading.Lock()  # lines from worker threads stay whole

    def msg(self, message: str) -> None:
        try:
            with self._lock:
                self._stream.write(message + "\n")
                self._stream.flush()
        except Exception:  # EFBIG, ENOSPC, EPIPE, a closed stream: the line is lost
            _drop()

    log = debug = info = warn = warning = error = err = critical = fatal = exception = msg


@cache
def _safe_wrapper(level: int) -> type[structlog.typing.FilteringBoundLogger]:
    """structlog's level-filtering logger whose calls never raise: a processor that
    fails drops the line like a write that fails."""
    base: Any = structlog.make_filtering_bound_logger(level)

    class SafeBoundLogger(base):  # type: ignore[misc]
        def _proxy_to_logger(
            self, method_name: str, event: str | None = None, **event_kw: Any
        ) -> Any:
            try:
                return super()._proxy_to_logger(method_name, event, **event_kw)
            except Exception:
                _drop()
                return None

    SafeBoundLogger.__name__ = f"Safe{base.__name__}"
    return SafeBoundLogger


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


BACKGROUND_INTERVAL = 0.05
"""Seconds a line written in the background waits at most before it is written."""
_AT_ONCE = frozenset({"warning", "warn", "error", "err", "critical", "fatal", "exception"})


class _BackgroundLines:
    """The structlog processor that ends a line's processing on the caller's thread:
    the line goes to a queue and a writer thread finishes it.

    Appending to a deque takes no lock and wakes nobody; the first line of a batch sets
    an event, and the writer waits :data:`BACKGROUND_INTERVAL` for the rest before it
    redacts, renders and writes them in order. A warning or an error drains the queue
    on the caller's thread first and is then written there, at once.
    """

    def __init__(self, finish: list[structlog.typing.Processor], logger: _LineLogger) -> None:
        self._finish = finish
        self._logger = logger
        self._queue: deque[structlog.typing.EventDict] = deque()
        self._queued = threading.Event()
        self._closed = False
        self._draining = threading.Lock()  # one drainer at a time: lines stay in order
        self._thread = threading.Thread(target=self._run, name="guardproxy-log", daemon=True)
        self._thread.start()

    def __call__(
        self, logger: object, method: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        if method in _AT_ONCE:
            self.drain()
            return event  # the rest of the chain runs here: written before the caller goes on
        self._queue.append(event)
        if len(self._queue) == 1:
            self._queued.set()
        raise structlog.DropEvent

    def _run(self) -> None:
        while not self._closed:
            self._queued.wait()
            self._queued.clear()
            time.sleep(BACKGROUND_INTERVAL)  # gather the rest of the batch
            self.drain()

    def close(self) -> None:
        """Write what is queued and end the writer thread."""
        self._closed = True
        self._queued.set()
        self.drain()

    def drain(self) -> None:
        """Write every queued line now (a writer thread, a warning, the process's exit)."""
        with self._draining:
            while self._queue:
                event = self._queue.popleft()
                try:
                    rendered: Any = event
                    for processor in self._finish:
                        rendered = processor(None, "info", rendered)
                    self._logger.msg(rendered)
                except Exception:  # a processor's bug: the line is lost, the writer goes on
                    _drop()


_background: _BackgroundLines | None = None


def flush_logs() -> None:
    """Write the lines still queued for the background writer (idempotent)."""
    if _background is not None:
        _background.drain()


atexit.register(flush_logs)


def configure_logging(
    *,
    level: str = "info",
    json: bool | None = None,
    stream: TextIO | None = None,
    background: bool = False,
) -> None:
    """Route structlog to ``stream`` (stderr): console renderer on a TTY, else JSON.

    ``background``: lines below warning are redacted, rendered and written by a writer
    thread (see the module's doc), as ``guardproxy serve`` does.
    """
    global _background  # noqa: PLW0603 - one log destination per process, as structlog's
    output: TextIO = stream or sys.stderr
    as_json = not output.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=output.isatty())
    )
    if _background is not None:  # lines queued for the previous destination go there
        _background.close()
    logger = _LineLogger(stream or _CurrentStderr())
    stamp: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    finish: list[structlog.typing.Processor] = [redact_event, renderer]
    _background = _BackgroundLines(finish, logger) if background else None
    structlog.configure(
        processors=[*stamp, _background, *finish] if _background else [*stamp, *finish],
        wrapper_class=_safe_wrapper(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *args: logger,
        cache_logger_on_first_use=False,
    )
    # the standard library's handlers (mitmproxy's) print nothing and raise nothing when
    # a write fails: handleError is quiet without raiseExceptions
    logging.raiseExceptions = False

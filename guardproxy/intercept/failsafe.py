"""Hooks that cannot fail open.

mitmproxy calls every addon hook inside ``addonmanager.safecall``: an exception is
logged and swallowed, the remaining addons run, and the flow carries on as if the
hook had returned. For a request hook that means the request is forwarded, undecided
and unrecorded. So every guardproxy hook is wrapped here, and an exception ends in
the safe direction of its hook:

* a request hook (``requestheaders``, ``request``, ``http_connect``): a 403 in the
  API's own error format, built from the action if the guard had recognised it
  (else recognised again); if even that fails, a plain-text 403; if even that fails,
  the flow is killed. Nothing of the request reaches the upstream.
* ``server_connect``: the connection is refused.
* ``tls_clienthello``: the connection is intercepted (never passed through unseen).
* a response hook: the response streams on (the request was decided already).
* anything else: the error is logged and the hook returns.

The report of the failure (a log line, a metric) comes after the answer and cannot
undo it: it is itself guarded, and logging never raises (guardproxy/log.py).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import structlog
from mitmproxy import http, tls
from mitmproxy.proxy import server_hooks

from guardproxy.action import Action
from guardproxy.gate.responses import native_answer
from guardproxy.intercept.flows import ACTION, DECISION, LEARNER, http_request, respond
from guardproxy.metrics import Metrics
from guardproxy.recognise import recognise
from guardproxy.recognise.request import RecogniseSettings

log = structlog.get_logger(__name__)

MESSAGE = (
    "guardproxy failed while deciding this request, so it was not sent. "
    "Tell the user guardproxy hit an internal error; do not retry it another way."
)
REFERENCE = "error"
_PLAIN_BODY = f"guardproxy: {MESSAGE}\n".encode()
_PLAIN_HEADERS = {
    "Content-Type": "text/plain; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Guardproxy-Decision": "deny",
    "X-Guardproxy-Id": REFERENCE,
}

_wrapped: set[Callable[..., Any]] = set()


def is_failsafe(hook: Callable[..., Any]) -> bool:
    """Whether ``hook`` is wrapped by one of this module's decorators."""
    return hook in _wrapped


class Failsafe:
    """What a hook's failure does to its flow or connection, and how it is reported."""

    def __init__(self, settings: RecogniseSettings, metrics: Metrics | None = None) -> None:
        self._settings = settings
        self._metrics = metrics

    def refuse(self, flow: http.HTTPFlow, error: Exception, hook: str) -> None:
        """Answer ``flow`` with a 403 in place of whatever the failed hook left."""
        try:
            flow.metadata.pop(DECISION, None)  # nothing of the upstream's will come
            flow.metadata.pop(LEARNER, None)
            respond(flow, self._native(flow))
        except Exception:
            _refuse_plainly(flow)
        self._report("request.failed_closed", error, hook, flow)

    def _native(self, flow: http.HTTPFlow) -> Any:
        request = http_request(flow)
        action = flow.metadata.get(ACTION)
        if not isinstance(action, Action):
            action = recognise(request, self._settings)
        return native_answer(request, action, MESSAGE, decision="deny", reference=REFERENCE)

    def refuse_connection(
        self, data: server_hooks.ServerConnectionHookData, error: Exception, hook: str
    ) -> None:
        data.server.error = "guardproxy: this connection could not be checked, so it is refused"
        self._report("connection.failed_closed", error, hook, None)

    def intercept(self, data: tls.ClientHelloData, error: Exception, hook: str) -> None:
        data.ignore_connection = False
        self._report("tls.failed_closed", error, hook, None)

    def stream_on(self, flow: http.HTTPFlow, error: Exception, hook: str) -> None:
        try:
            if flow.response is not None and not flow.response.stream:
                flow.response.stream = True
        finally:
            self._report("response.hook_failed", error, hook, flow, count=False)

    def contain(self, error: Exception, hook: str) -> None:
        self._report("hook.failed", error, hook, None, count=False)

    def _report(
        self,
        event: str,
        error: Exception,
        hook: str,
        flow: http.HTTPFlow | None,
        *,
        count: bool = True,
    ) -> None:
        try:
            if count and self._metrics is not None:
                self._metrics.failed_closed("error")
            host = flow.request.host if flow is not None else ""
            log.error(event, hook=hook, host=host, error=repr(error))
        except Exception:  # the refusal stands; only its report is lost
            return


def _refuse_plainly(flow: http.HTTPFlow) -> None:
    """The last resort: a fixed answer; if even that fails, no answer at all."""
    try:
        flow.response = http.Response.make(403, _PLAIN_BODY, _PLAIN_HEADERS)
    except Exception:
        try:
            flow.kill()
        except Exception:  # nothing else can stop the flow from here
            return


class Guarded(Protocol):
    """An addon whose hooks are wrapped: it says how their failures are handled."""

    @property
    def failsafe(self) -> Failsafe: ...


def request_hook[S: Guarded](
    method: Callable[[S, http.HTTPFlow], None],
) -> Callable[[S, http.HTTPFlow], None]:
    """A synchronous request hook: any exception refuses the request."""

    @functools.wraps(method)
    def hook(self: S, flow: http.HTTPFlow) -> None:
        try:
            method(self, flow)
        except Exception as error:
            self.failsafe.refuse(flow, error, method.__qualname__)

    _wrapped.add(hook)
    return hook


def async_request_hook[S: Guarded](
    method: Callable[[S, http.HTTPFlow], Awaitable[None]],
) -> Callable[[S, http.HTTPFlow], Coroutine[Any, Any, None]]:
    """An asynchronous request hook: any exception refuses the request."""

    @functools.wraps(method)
    async def hook(self: S, flow: http.HTTPFlow) -> None:
        try:
            await method(self, flow)
        except Exception as error:
            self.failsafe.refuse(flow, error, method.__qualname__)

    _wrapped.add(hook)
    return hook


def connection_hook[S: Guarded](
    method: Callable[[S, server_hooks.ServerConnectionHookData], Awaitable[None]],
) -> Callable[[S, server_hooks.ServerConnectionHookData], Coroutine[Any, Any, None]]:
    """``server_connect``: any exception refuses the connection."""

    @functools.wraps(method)
    async def hook(self: S, data: server_hooks.ServerConnectionHookData) -> None:
        try:
            await method(self, data)
        except Exception as error:
            self.failsafe.refuse_connection(data, error, method.__qualname__)

    _wrapped.add(hook)
    return hook


def tls_hook[S: Guarded](
    method: Callable[[S, tls.ClientHelloData], None],
) -> Callable[[S, tls.ClientHelloData], None]:
    """``tls_clienthello``: any exception intercepts the connection."""

    @functools.wraps(method)
    def hook(self: S, data: tls.ClientHelloData) -> None:
        try:
            method(self, data)
        except Exception as error:
            self.failsafe.intercept(data, error, method.__qualname__)

    _wrapped.add(hook)
    return hook


def response_hook[S: Guarded](
    method: Callable[[S, http.HTTPFlow], None],
) -> Callable[[S, http.HTTPFlow], None]:
    """A response hook: the request was decided; any exception lets the response stream."""

    @functools.wraps(method)
    def hook(self: S, flow: http.HTTPFlow) -> None:
        try:
            method(self, flow)
        except Exception as error:
            self.failsafe.stream_on(flow, error, method.__qualname__)

    _wrapped.add(hook)
    return hook


def contained_hook[S: Guarded, T](method: Callable[[S, T], None]) -> Callable[[S, T], None]:
    """A hook off the request path: any exception is logged, nothing else."""

    @functools.wraps(method)
    def hook(self: S, data: T) -> None:
        try:
            method(self, data)
        except Exception as error:
            self.failsafe.contain(error, method.__qualname__)

    _wrapped.add(hook)
    return hook


class SafeStream:
    """A response stream callable that passes chunks on even if ``inner`` fails
    (learning names from a response is best effort; the response is the client's)."""

    def __init__(self, inner: Callable[[bytes], bytes]) -> None:
        self._inner: Callable[[bytes], bytes] | None = inner

    def __call__(self, chunk: bytes) -> bytes:
        inner = self._inner
        if inner is not None:
            try:
                inner(chunk)
            except Exception:
                self._inner = None  # the rest of the response passes untouched
        return chunk


__all__ = [
    "MESSAGE",
    "REFERENCE",
    "Failsafe",
    "Guarded",
    "SafeStream",
    "async_request_hook",
    "connection_hook",
    "contained_hook",
    "is_failsafe",
    "request_hook",
    "response_hook",
    "tls_hook",
]

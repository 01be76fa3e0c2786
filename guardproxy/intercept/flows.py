"""What guardproxy keeps on a mitmproxy flow, and how it reads and answers one."""

from __future__ import annotations

from mitmproxy import http

from guardproxy.gate.responses import NativeAnswer
from guardproxy.recognise.request import HttpRequest

SESSION = "guardproxy.session"
DECISION = "guardproxy.decision"
LEARNER = "guardproxy.learner"
ACTION = "guardproxy.action"
"""The recognised action, once known: a refusal after a failure is shaped for its API."""
STEPS_NOTE = "guardproxy.safety-steps"
"""The safety steps run before a held request was released, for the agent."""
STEPS_HEADER = "X-Guardproxy-Safety-Steps"
"""On the upstream's answer to a released request: what the guard did before releasing it
(``snapshot: rds snapshot ... (available) (12.3 s)``)."""


def respond(flow: http.HTTPFlow, answer: NativeAnswer) -> None:
    headers = [(name.encode(), value.encode()) for name, value in answer.headers]
    flow.response = http.Response.make(answer.status, answer.body, headers)


def http_request(flow: http.HTTPFlow, *, body: bytes | None = None) -> HttpRequest:
    """The flow's request as recognisers see it, on the real destination."""
    request = flow.request
    headers = tuple(
        (name.lower(), value)
        for name, value in request.headers.items(multi=True)
        if name.lower() != "proxy-authorization"
    )
    return HttpRequest(
        method=request.method,
        scheme=request.scheme,
        host=request.host,
        port=request.port,
        path=request.path,
        headers=headers,
        body=(request.raw_content or b"") if body is None else body,
        host_header=request.host_header or "",
    )


__all__ = ["ACTION", "DECISION", "LEARNER", "SESSION", "http_request", "respond"]

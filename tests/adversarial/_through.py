"""Send one hand-made request through a running guardproxy, byte for byte as written.

The bypasses these suites hold shut are requests no SDK sends (a header twice, a host
spelled ``0x7f.1``, a form key repeated), so the client is ``http.client`` with every
header put by hand: nothing normalises the request before the proxy sees it. Each
request carries an ``X-Adversarial-Case`` header so a test can ask the recording
upstream whether *that* request arrived, and goes in a session of its own: the
shipped sequence rules hold a session's requests after several destructive ones, and
a case must be decided on what it is, not on what the cases before it did.
"""

from __future__ import annotations

import base64
import http.client
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from e2e.guard_fixtures import Guard, guard_config
from e2e.servers import EchoServer

CASE_HEADER = "X-Adversarial-Case"
TIMEOUT = 30.0


@dataclass(frozen=True)
class Answer:
    status: int
    decision: str  # X-Guardproxy-Decision of a guard-made answer, "" when the upstream answered
    body: bytes


def through(
    guard: Guard,
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    case: str,
) -> Answer:
    """``method url`` in absolute form to the proxy, with exactly these headers (and a
    ``Host`` header naming the URL's host unless ``headers`` has one)."""
    session = guard.session(f"adversarial-{case}")
    credentials = urlsplit(session.proxy_url)
    login = f"{unquote(credentials.username or '')}:{unquote(credentials.password or '')}"
    connection = http.client.HTTPConnection("127.0.0.1", guard.proxy_port, timeout=TIMEOUT)
    try:
        connection.putrequest(method, url, skip_host=True, skip_accept_encoding=True)
        connection.putheader(
            "Proxy-Authorization", "Basic " + base64.b64encode(login.encode()).decode()
        )
        if not any(name.lower() == "host" for name, _value in headers):
            connection.putheader("Host", url.split("://", 1)[1].split("/", 1)[0])
        connection.putheader(CASE_HEADER, case)
        for name, value in headers:
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        return Answer(response.status, response.getheader("X-Guardproxy-Decision") or "", data)
    finally:
        connection.close()


def arrived(upstream: EchoServer, case: str) -> bool:
    """Whether the request of ``case`` reached the upstream."""
    return any(r.header(CASE_HEADER) == case for r in upstream.requests)


def module_guard(directory: Path, **overrides: Any) -> Iterator[Guard]:
    """One guardproxy (shipped policies) for a module's cases; stopped at teardown."""
    guard = Guard(guard_config(directory / "guardproxy", **overrides)).start()
    try:
        yield guard
    finally:
        guard.stop()

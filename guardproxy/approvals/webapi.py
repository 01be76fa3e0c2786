"""Calls to the services on-call routing and chat approvals use (PagerDuty, Opsgenie,
Slack): one request and its whole answer, through a transport the caller can replace.

The notifier's :class:`~guardproxy.approvals.notify.HttpTransport` only needs a status;
these APIs answer with bodies that matter (who is on call, a Slack message's ``ts``), so
:class:`ApiTransport` returns the answer's status, headers and body. The real one is
tornado's HTTP client (:class:`TornadoApiTransport`); tests drive the same code against
fakes of the services on loopback by giving their addresses as the services' URLs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

from guardproxy.approvals.notify import TransportError

__all__ = [
    "ANSWER_LIMIT",
    "ApiAnswer",
    "ApiRequest",
    "ApiTransport",
    "LazyTransport",
    "SecretError",
    "TornadoApiTransport",
    "TransportError",
    "api_url",
    "read_secret",
]

ANSWER_LIMIT = 4 * 1024 * 1024
"""Bytes of an answer read at most (on-call lists are paged far below this)."""


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: Literal["GET", "POST"]
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    timeout: float = 10.0
    """Seconds to connect, and again to get the answer."""


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Header names in lower case."""

    def json(self) -> Any:
        """The body as JSON; ValueError if it is not."""
        return json.loads(self.body or b"null")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class ApiTransport(Protocol):
    """Sends one :class:`ApiRequest` and returns the answer, whatever its status; raises
    :class:`TransportError` when there is none (refused, reset, timed out)."""

    async def send(self, request: ApiRequest) -> ApiAnswer: ...

    def close(self) -> None: ...


class TornadoApiTransport:
    """tornado's HTTP client, redirects not followed; create it on the loop that uses it."""

    def __init__(self) -> None:
        self._client = AsyncHTTPClient(force_instance=True, max_body_size=ANSWER_LIMIT)

    async def send(self, request: ApiRequest) -> ApiAnswer:
        outgoing = HTTPRequest(
            request.url,
            method=request.method,
            headers=dict(request.headers),
            body=request.body if request.method == "POST" else None,
            request_timeout=request.timeout,
            connect_timeout=request.timeout,
            follow_redirects=False,
            allow_nonstandard_methods=False,
        )
        try:
            response: HTTPResponse = await self._client.fetch(outgoing, raise_error=False)
        except HTTPClientError as failure:  # 599: no answer (time-out, closed connection)
            raise TransportError(f"HTTP {failure.code}") from None
        except OSError as failure:
            raise TransportError(f"{type(failure).__name__}: {failure}") from None
        if response.code == 599:
            raise TransportError(f"no answer: {response.error}")
        headers = {name.lower(): value for name, value in response.headers.get_all()}
        return ApiAnswer(response.code, response.body or b"", headers)

    def close(self) -> None:
        self._client.close()


def api_url(base: str, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
    """``base`` (no trailing slash needed) joined with ``path`` and the query."""
    url = base.rstrip("/") + path
    return f"{url}?{urlencode(list(query))}" if query else url


class SecretError(Exception):
    """A configured secret cannot be read; the message says which and what to do."""


def read_secret(file: Path | None, env: str | None, what: str) -> str:
    """The secret from ``file`` or the environment variable ``env`` (never logged);
    :class:`SecretError` (one line) if neither is given, or it cannot be read, or is empty."""
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise SecretError(
                f"{what}: cannot read the secret file {file}: {reason}; create it with the "
                "secret alone on one line (chmod 600)"
            ) from None
        source = f"the file {file}"
    elif env is not None:
        value = os.environ.get(env, "").strip()
        source = f"the environment variable {env}"
    else:
        raise SecretError(f"{what}: give a secret file (…_file) or environment variable (…_env)")
    if not value:
        raise SecretError(f"{what}: {source} is empty or unset")
    return value


class LazyTransport:
    """A :class:`TornadoApiTransport` made on first use, so on the loop that uses it."""

    def __init__(self) -> None:
        self._transport: TornadoApiTransport | None = None

    async def send(self, request: ApiRequest) -> ApiAnswer:
        if self._transport is None:
            self._transport = TornadoApiTransport()
        return await self._transport.send(request)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

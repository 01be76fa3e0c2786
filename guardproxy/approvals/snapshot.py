"""What an approver sees of a held request: exactly what would be sent, redacted.

Kept with the hold (never the raw header values or body), with the context the
decision was made in, so the approver judges the request itself and the release
can re-evaluate it against the current policy.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from guardproxy.context import Context
from guardproxy.recognise.request import HttpRequest

REDACTED = "[redacted]"
# headers whose values say what is sent, not who sends it
_SHOWN_HEADERS = frozenset(
    {"content-type", "content-length", "content-encoding", "accept", "user-agent",
     "x-amz-target", "x-http-method-override", "if-match", "if-none-match", "upgrade"}
)  # fmt: skip


def _url(request: HttpRequest) -> str:
    default = (request.scheme == "https" and request.port == 443) or (
        request.scheme == "http" and request.port == 80
    )
    netloc = request.host if default else f"{request.host}:{request.port}"
    split = urlsplit(request.path)
    query = urlencode([(k, REDACTED) for k, _ in parse_qsl(split.query, keep_blank_values=True)])
    return urlunsplit((request.scheme, netloc, split.path or "/", query, ""))


def request_snapshot(request: HttpRequest) -> dict[str, Any]:
    """Method, URL, headers and body as they would be sent, with secrets taken out."""
    headers = [
        [name, value if name in _SHOWN_HEADERS else REDACTED] for name, value in request.headers
    ]
    return {
        "method": request.method,
        "url": _url(request),
        "headers": headers,
        "body": {
            "size": len(request.body),
            "sha256": hashlib.sha256(request.body).hexdigest(),
            "preview": "",
        },
    }


def hold_detail(request: HttpRequest, context: Context) -> dict[str, Any]:
    """The hold's detail snapshot: the redacted request and the decision's context."""
    return {"request": request_snapshot(request), "context": context.model_dump(mode="json")}

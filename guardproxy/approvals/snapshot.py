"""What an approver sees of a held request: exactly what would be sent, redacted.

Kept with the hold (never the raw credentials: values go through
:mod:`guardproxy.redact`), with the context the decision was made in, so the
approver judges the request itself and the release can re-evaluate it against the
current policy.
"""

from __future__ import annotations

import hashlib
from typing import Any

from guardproxy.context import Context
from guardproxy.recognise.request import HttpRequest
from guardproxy.redact import redact_body, redact_headers, redact_url

BODY_PREVIEW = 4096
"""Characters of the (redacted) body an approver sees."""


def _url(request: HttpRequest) -> str:
    default = (request.scheme == "https" and request.port == 443) or (
        request.scheme == "http" and request.port == 80
    )
    host = f"[{request.host}]" if ":" in request.host else request.host
    netloc = host if default else f"{host}:{request.port}"
    return f"{request.scheme}://{netloc}{request.path}"


def request_snapshot(request: HttpRequest) -> dict[str, Any]:
    """Method, URL, headers and body as they would be sent, with credentials taken out."""
    return {
        "method": request.method,
        "url": redact_url(_url(request)),
        "headers": [list(h) for h in redact_headers(list(request.headers))],
        "body": {
            "size": len(request.body),
            "sha256": hashlib.sha256(request.body).hexdigest(),
            "content_type": request.header("content-type"),
            "preview": redact_body(request.body, request.header("content-type"), BODY_PREVIEW),
        },
    }


def hold_detail(request: HttpRequest, context: Context) -> dict[str, Any]:
    """The hold's detail snapshot: the redacted request and the decision's context."""
    return {"request": request_snapshot(request), "context": context.model_dump(mode="json")}

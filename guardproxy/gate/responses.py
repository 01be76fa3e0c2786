"""Answers in the client's own error format, so its CLI or SDK prints our message.

A denial or a pending hold is always HTTP 403 with an error code the SDKs do not
retry: never 5xx, 429 or a throttling code (botocore retries those, and a retried
destroy is the last thing we want), never a dropped connection (also retried).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from xml.sax.saxutils import escape

from guardproxy.action import Action, Provider
from guardproxy.recognise.git import parse_push_request
from guardproxy.recognise.request import HttpRequest

# AWS services whose REST protocol speaks XML (the rest speak JSON).
_AWS_REST_XML = frozenset({"s3", "s3control", "route53", "cloudfront"})
_STATUS = 403


@dataclass(frozen=True)
class NativeAnswer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def native_answer(
    request: HttpRequest, action: Action, message: str, *, decision: str, reference: str
) -> NativeAnswer:
    """The 403 for ``decision`` (deny or hold) shaped for ``action``'s API."""
    headers = [
        ("X-Guardproxy-Decision", decision),
        ("X-Guardproxy-Id", reference),
        ("Cache-Control", "no-store"),
    ]
    if request.path_only.endswith("/git-receive-pack"):
        rejected = _git_push_rejected(request, message, decision, reference)
        if rejected is not None:
            headers.append(("Content-Type", "application/x-git-receive-pack-result"))
            return NativeAnswer(200, tuple(headers), rejected)
    content_type, body = _body(request, action, message, reference, headers)
    headers.append(("Content-Type", content_type))
    return NativeAnswer(_STATUS, tuple(headers), body)


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _body(
    request: HttpRequest,
    action: Action,
    message: str,
    reference: str,
    headers: list[tuple[str, str]],
) -> tuple[str, bytes]:
    match action.provider:
        case Provider.AWS:
            return _aws(request, action, message, reference, headers)
        case Provider.K8S:
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "Forbidden",
                "details": {"name": action.resource.name, "kind": _k8s_kind(action)},
                "code": _STATUS,
            }
            return "application/json", _json(status)
        case Provider.GITHUB:
            body = {"message": message, "documentation_url": "", "status": str(_STATUS)}
            return "application/json; charset=utf-8", _json(body)
        case Provider.GCP:
            error = {"code": _STATUS, "message": message, "status": "PERMISSION_DENIED"}
            return "application/json; charset=UTF-8", _json({"error": error})
        case Provider.AZURE:
            error = {"code": "AuthorizationFailed", "message": message}
            return "application/json; charset=utf-8", _json({"error": error})
        case Provider.TFC:
            error = {"status": str(_STATUS), "title": "forbidden", "detail": message}
            return "application/vnd.api+json", _json({"errors": [error]})
        case Provider.DOCKER:
            return "application/json", _json({"message": message})
        case Provider.GIT:
            return "text/plain; charset=utf-8", (message + "\n").encode()
        case _:
            body = {"error": "guardproxy", "message": message, "id": reference}
            return "application/json", _json(body)


def _k8s_kind(action: Action) -> str:
    # k8s:<group>:<resource>[/<subresource>] -> resource, as kubectl prints it
    return action.resource.type.rsplit(":", 1)[-1].split("/", 1)[0]


def _aws(
    request: HttpRequest,
    action: Action,
    message: str,
    reference: str,
    headers: list[tuple[str, str]],
) -> tuple[str, bytes]:
    content_type = request.header("content-type")
    if request.header("x-amz-target") or content_type.startswith("application/x-amz-json"):
        body = {"__type": "AccessDeniedException", "message": message, "Message": message}
        return content_type or "application/x-amz-json-1.1", _json(body)
    text = escape(message)
    if content_type.startswith("application/x-www-form-urlencoded"):
        if action.service == "ec2":
            xml = (
                "<Response><Errors><Error><Code>UnauthorizedOperation</Code>"
                f"<Message>{text}</Message></Error></Errors>"
                f"<RequestID>{escape(reference)}</RequestID></Response>"
            )
        else:
            xml = (
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
                f"<Message>{text}</Message></Error>"
                f"<RequestId>{escape(reference)}</RequestId></ErrorResponse>"
            )
        return "text/xml", xml.encode()
    if action.service in _AWS_REST_XML:
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
            f"<Message>{text}</Message><RequestId>{escape(reference)}</RequestId></Error>"
        )
        return "application/xml", xml.encode()
    headers.append(("x-amzn-ErrorType", "AccessDeniedException"))
    return "application/json", _json({"message": message, "Message": message})


def _pkt(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode() + data


def _git_push_rejected(
    request: HttpRequest, message: str, decision: str, reference: str
) -> bytes | None:
    """A receive-pack report that rejects every ref: git prints our message as
    `remote: ...` and each ref as `! [remote rejected]`, where a plain HTTP 403
    would only print "RPC failed; HTTP 403" and lose the message."""
    try:
        updates, capabilities = parse_push_request(request)
    except ValueError:
        return None
    if not updates:
        return None
    why = f"held for approval ({reference})" if decision == "hold" else f"denied ({reference})"
    report = _pkt(b"unpack ok\n")
    report += b"".join(_pkt(f"ng {u.ref} guardproxy: {why}\n".encode()) for u in updates)
    report += b"0000"
    if not capabilities & {"side-band", "side-band-64k"}:
        return report
    limit = 65515 if "side-band-64k" in capabilities else 995
    progress = f"{message}\n".encode()
    body = b"".join(_pkt(b"\x02" + progress[i : i + limit]) for i in range(0, len(progress), limit))
    body += b"".join(_pkt(b"\x01" + report[i : i + limit]) for i in range(0, len(report), limit))
    return body + b"0000"

"""``guardproxy recognise``: what Action a raw request becomes, and why."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from guardproxy.recognise import dispatch_reason, recognise
from guardproxy.recognise.request import HttpRequest, RecogniseSettings


class RequestFileError(Exception):
    """The request file cannot be read as HTTP/1.1 or JSON; the message says why."""


def add_commands(subparsers: Any) -> None:
    command = subparsers.add_parser(
        "recognise", help="print the Action a raw HTTP request becomes (as JSON)"
    )
    command.add_argument("--request", type=Path, required=True, metavar="FILE",
                         help="raw HTTP/1.1 (absolute URL or Host header) or JSON "
                              "{method, url, headers, body}; - for stdin")  # fmt: skip
    command.add_argument("--explain", action="store_true", help="say how it was recognised")
    command.add_argument("--kube-host", action="append", default=[], metavar="HOST[:PORT]")
    command.add_argument("--env", action="append", default=[], metavar="SELECTOR=ENV",
                         help="as for serve: aws:account:1111=prod, github:acme=prod")  # fmt: skip
    command.set_defaults(handler=cmd_recognise)


def _split_target(url: str, host_header: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) from an absolute URL, or a path plus Host header."""
    if "://" in url:
        parts = urlsplit(url)
        scheme = parts.scheme or "https"
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return scheme, host, port, path
    if not host_header:
        raise RequestFileError("a request line with a path needs a Host header")
    host, _, port_text = (
        host_header.rpartition(":") if ":" in host_header else (host_header, "", "")
    )
    port = int(port_text) if port_text.isdigit() else 443
    return ("https" if port == 443 else "http"), host, port, url


def parse_raw(data: bytes) -> HttpRequest:
    head, _, body = data.replace(b"\r\n", b"\n").partition(b"\n\n")
    lines = head.decode("latin-1").split("\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise RequestFileError(f"line 1: not an HTTP request line: {lines[0][:80]!r}") from None
    headers: list[tuple[str, str]] = []
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.partition(":")
        if not sep:
            raise RequestFileError(f"line {number}: not a header: {line[:80]!r}")
        headers.append((name.strip().lower(), value.strip()))
    host_header = next((v for k, v in headers if k == "host"), "")
    scheme, host, port, path = _split_target(target, host_header)
    return HttpRequest(method.upper(), scheme, host, port, path, tuple(headers), body, host_header)


def parse_json(document: Any) -> HttpRequest:
    if not isinstance(document, dict) or "url" not in document:
        raise RequestFileError("JSON requests are objects with method, url, headers and body")
    headers_in = document.get("headers") or {}
    pairs = headers_in.items() if isinstance(headers_in, dict) else headers_in
    headers = tuple((str(k).lower(), str(v)) for k, v in pairs)
    body_in = document.get("body") or ""
    body = base64.b64decode(document["body_base64"]) if "body_base64" in document else (
        body_in.encode() if isinstance(body_in, str) else json.dumps(body_in).encode()
    )  # fmt: skip
    host_header = next((v for k, v in headers if k == "host"), "")
    scheme, host, port, path = _split_target(str(document["url"]), host_header)
    method = str(document.get("method", "GET")).upper()
    return HttpRequest(method, scheme, host, port, path, headers, body, host_header)


def read_request(path: Path) -> HttpRequest:
    data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    if data.lstrip().startswith(b"{"):
        try:
            return parse_json(json.loads(data))
        except json.JSONDecodeError as error:
            raise RequestFileError(f"line {error.lineno}: invalid JSON: {error.msg}") from None
    return parse_raw(data)


def cmd_recognise(args: argparse.Namespace) -> int:
    try:
        request = read_request(args.request)
    except OSError as error:
        print(f"guardproxy: {args.request}: {error.strerror}", file=sys.stderr)
        return 2
    except RequestFileError as error:
        print(f"guardproxy: {args.request}: {error}", file=sys.stderr)
        return 2
    environments = dict(item.rpartition("=")[::2] for item in args.env)
    settings = RecogniseSettings(environments=environments, kubernetes_hosts=tuple(args.kube_host))
    action = recognise(request, settings)
    if args.explain:
        provider, reason = dispatch_reason(request, settings)
        print(f"# {request.method} {request.scheme}://{request.host}:{request.port}"
              f"{request.path_only}", file=sys.stderr)  # fmt: skip
        print(f"# recogniser: {provider} because {reason}", file=sys.stderr)
        result = (f"{action.summary()} -> verb {action.verb}, confidence {action.confidence},"
                  f" environment {action.environment}")  # fmt: skip
        print(f"# result: {result}", file=sys.stderr)
    print(action.model_dump_json(indent=2))
    return 0

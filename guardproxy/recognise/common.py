"""Pieces every recogniser needs: who sent the request, what may be kept of it, identity keys,
and the body as the server's application reads it (content and transfer codings removed).

Kept apart from the provider modules so that the fail-closed path in ``__init__`` can
still describe a request whose provider recogniser blew up.
"""

from __future__ import annotations

import re
import sys
import zlib
from collections.abc import Callable, Iterable
from typing import Protocol, cast

import brotli

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

from guardproxy.action import Actor, RequestSummary
from guardproxy.recognise.request import HttpRequest

USER_AGENT_LIMIT = 256
"""Longest user agent kept on the action; SDK user agents can carry kilobytes of metadata."""

NAME_LIMIT = 1024
"""Longest resource name or id kept; the bundle's ``maxStringBytes`` default is the same."""

BODY_PARSE_LIMIT = 4 * 1024 * 1024
"""Bodies larger than this are not parsed: parameters that matter are in small requests,
and large ones (S3 uploads, git packs aside) are data, not API calls worth decoding."""

# Ordered: the first pattern found in the user agent names the tool. Wrappers come
# before the SDKs they embed (Terraform's provider sends aws-sdk-go-v2 in its UA; the
# AWS CLI sends botocore), so their markers must win.
_TOOLS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), tool)
    for pattern, tool in (
        (r"\bTerraform/", "terraform"),
        (r"\bpulumi", "pulumi"),
        (r"\baws-cdk\b|\baws-cdk-lib\b", "aws-cdk"),
        (r"^kubectl/|\bkubectl/", "kubectl"),
        (r"^helm/|\bHelm/", "helm"),
        (r"\baws-cli/", "aws-cli"),
        (r"\bBoto3/", "boto3"),
        (r"\bBotocore/", "botocore"),
        (r"\baws-sdk-go-v2\b", "aws-sdk-go-v2"),
        (r"\baws-sdk-go/", "aws-sdk-go"),
        (r"\baws-sdk-js\b|\baws-sdk-nodejs\b", "aws-sdk-js"),
        (r"\baws-sdk-java\b", "aws-sdk-java"),
        (r"\baws-sdk-rust\b", "aws-sdk-rust"),
        (r"\baws-sdk-dotnet|\baws-sdk-net\b", "aws-sdk-dotnet"),
        (r"^git/|\bgit/\d", "git"),
        (r"\bJGit/", "jgit"),
        (r"^gh/|\bGitHub CLI\b", "gh"),
        (r"\bgoogle-cloud-sdk\b|\bgcloud/", "gcloud"),
        (r"\bazsdk-|\bAZURECLI/|\bazure-cli\b", "azure-cli"),
        (r"^Docker-Client/|^docker/", "docker"),
        (r"^curl/", "curl"),
        (r"^Wget/", "wget"),
        (r"^python-requests/", "python-requests"),
        (r"^python-httpx/", "python-httpx"),
        (r"^Python-urllib/", "python-urllib"),
        (r"\baiohttp/", "aiohttp"),
        (r"^axios/", "axios"),
        (r"^node-fetch|^undici\b|^node\b", "node"),
        (r"^Go-http-client/", "go-http-client"),
        (r"^okhttp/", "okhttp"),
    )
)


def tool_from_user_agent(user_agent: str) -> str:
    """The tool that sent the request, as far as its user agent tells (``""`` if unknown)."""
    for pattern, tool in _TOOLS:
        if pattern.search(user_agent):
            return tool
    return ""


def actor_of(request: HttpRequest) -> Actor:
    """The actor fields the wire shows: tool and user agent (never a credential)."""
    user_agent = request.user_agent
    tool = tool_from_user_agent(user_agent)
    if not tool and request.header("kubectl-command"):
        tool = "kubectl"
    return Actor(tool=tool, user_agent=user_agent[:USER_AGENT_LIMIT])


def summary_of(request: HttpRequest) -> RequestSummary:
    """What may be kept of the request: no query (it can hold presigned signatures), no values."""
    return RequestSummary(
        method=request.method.upper(),
        host=request.host.lower(),
        port=request.port,
        path=request.path_only,
        header_names=request.header_names,
        body_bytes=len(request.body),
    )


def resource_key(provider: str, scope: Iterable[str], rtype: str, ident: str) -> str:
    """``<provider>:<scope parts>:<type>/<name or id>``; empty when nothing identifies it.

    Two requests about the same user-chosen name (a delete, then a create) get the
    same key, which is what a delete-and-recreate detector compares.
    """
    if not ident or not rtype:
        return ""
    return ":".join([provider, *scope, rtype]) + "/" + ident


def cap(text: str, limit: int = NAME_LIMIT) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit], True


MAX_CODINGS = 4
"""Most codings one body may stack (each is decoded up to the limit): clients apply one."""

ZSTD_WINDOW_LOG_MAX = 23
"""RFC 9659: a ``zstd`` content coding uses at most an 8 MiB window, and a decoder may
refuse more; refusing bounds the decoder's memory, which the frame header chooses."""

_BROTLI_STEP = 1 << 20


class UnreadableBodyError(ValueError):
    """The body cannot be read as the server would read it: a coding no decoder here
    knows, a stream that does not decode or ends early, data after the end of the stream
    (decoders disagree on it: zlib and git's http-backend stop after one gzip member,
    Python's gzip module and Go read them all), a decoded body over the limit, or a
    ``deflate`` body that reads differently as zlib and as raw deflate. A recogniser
    that meets it must not read the request as bodiless: a request that can change
    state is unclassified (``verb=unknown``) and the bundle's ``unclassified`` decides."""


def _list_elements(value: str) -> list[str]:
    """The elements of an RFC 9110 list field value, lower-cased (empty ones dropped)."""
    return [element.strip().lower() for element in value.split(",") if element.strip()]


def body_codings(request: HttpRequest) -> list[str]:
    """The codings on the request body, in the order the client applied them.

    Every ``Content-Encoding`` field line counts (RFC 9110 section 5.3: repeated lines are
    one comma-separated list; coding names are case-insensitive), then the
    ``Transfer-Encoding`` codings other than ``chunked``: mitmproxy removes the chunked
    framing only, and accepts ``gzip, chunked`` (``mitmproxy/net/http/validate.py``), so
    ``raw_content`` still carries a gzip transfer coding the upstream would remove.
    ``identity`` changes nothing and is left out.
    """
    codings: list[str] = []
    for value in request.header_values("content-encoding"):
        codings += _list_elements(value)
    for value in request.header_values("transfer-encoding"):
        codings += [c for c in _list_elements(value) if c != "chunked"]
    return [c for c in codings if c != "identity"]


def _inflate(data: bytes, wbits: int, limit: int, coding: str) -> bytes:
    """One zlib, raw-deflate or gzip stream (``wbits`` says which), and nothing after it."""
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise UnreadableBodyError(f"{coding}: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise UnreadableBodyError(f"{coding}: decodes to more than {limit} bytes")
    if not inflater.eof:
        raise UnreadableBodyError(f"{coding}: the stream ends early")
    if inflater.unused_data:
        raise UnreadableBodyError(f"{coding}: data after the end of the stream")
    return out


def _gzip(data: bytes, limit: int) -> bytes:
    return _inflate(data, 16 + zlib.MAX_WBITS, limit, "gzip")


def _deflate(data: bytes, limit: int) -> bytes:
    """``deflate`` is zlib-wrapped (RFC 9110 section 8.4.1.2), but servers that follow
    browsers also take raw deflate. A body only one of them reads is read so; one
    both read alike is fine; one they read differently is unreadable."""
    results: list[bytes] = []
    errors: list[UnreadableBodyError] = []
    for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):
        try:
            results.append(_inflate(data, wbits, limit, "deflate"))
        except UnreadableBodyError as exc:
            errors.append(exc)
    if not results:
        raise errors[0]
    if len(results) == 2 and results[0] != results[1]:
        raise UnreadableBodyError("deflate: reads differently as zlib and as raw deflate")
    return results[0]


class _BrotliDecompressor(Protocol):
    """brotli 1.2's streaming decompressor (the package ships no type information)."""

    def process(self, data: bytes, output_buffer_limit: int = ...) -> bytes: ...
    def is_finished(self) -> bool: ...
    def can_accept_more_data(self) -> bool: ...


def _brotli(data: bytes, limit: int) -> bytes:
    decompressor = cast(_BrotliDecompressor, brotli.Decompressor())
    out: list[bytes] = []
    total = 0
    try:
        chunk = decompressor.process(data, output_buffer_limit=_BROTLI_STEP)
        while True:
            total += len(chunk)
            if total > limit:
                raise UnreadableBodyError(f"br: decodes to more than {limit} bytes")
            out.append(chunk)
            if decompressor.is_finished() or decompressor.can_accept_more_data():
                break
            chunk = decompressor.process(b"", output_buffer_limit=_BROTLI_STEP)
    except brotli.error as exc:  # also data after the end of the stream
        raise UnreadableBodyError(f"br: {exc}") from exc
    if not decompressor.is_finished():
        raise UnreadableBodyError("br: the stream ends early")
    return b"".join(out)


def _zstd(data: bytes, limit: int) -> bytes:
    decompressor = zstd.ZstdDecompressor(
        options={zstd.DecompressionParameter.window_log_max: ZSTD_WINDOW_LOG_MAX}
    )
    try:
        out = decompressor.decompress(data, max_length=limit + 1)
    except zstd.ZstdError as exc:
        raise UnreadableBodyError(f"zstd: {exc}") from exc
    if len(out) > limit or (not decompressor.eof and not decompressor.needs_input):
        raise UnreadableBodyError(f"zstd: decodes to more than {limit} bytes")
    if not decompressor.eof:
        raise UnreadableBodyError("zstd: the stream ends early")
    if decompressor.unused_data:  # a second frame: not every decoder reads on
        raise UnreadableBodyError("zstd: data after the end of the frame")
    return out


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _gzip,
    "x-gzip": _gzip,  # RFC 9110 section 8.4.1.3: a recipient should treat it as gzip
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}


def decode_body(request: HttpRequest, limit: int = BODY_PARSE_LIMIT) -> bytes:
    """The body with every content and transfer coding removed, the last applied first.

    Raises :class:`UnreadableBodyError` when a coding is unknown (``compress`` included), a
    stream is corrupt, truncated or followed by more data, more than ``MAX_CODINGS``
    are stacked, or the body or any decoded layer is over ``limit`` bytes (every
    decoder stops at ``limit``, so a small compressed body cannot expand without bound).
    An empty body is empty whatever its codings say: no decoder finds content in it.
    """
    body = request.body
    if len(body) > limit:
        raise UnreadableBodyError(f"the body is over {limit} bytes")
    codings = body_codings(request)
    if not codings or not body:
        return body
    if len(codings) > MAX_CODINGS:
        raise UnreadableBodyError(f"{len(codings)} codings stacked, more than {MAX_CODINGS}")
    for coding in reversed(codings):
        decoder = _DECODERS.get(coding)
        if decoder is None:
            raise UnreadableBodyError(f"unknown coding {coding!r}")
        body = decoder(body, limit)
    return body


def decoded_body(request: HttpRequest, limit: int = BODY_PARSE_LIMIT) -> bytes | None:
    """:func:`decode_body`, or None when the body cannot be read (too large, an unknown
    coding, a corrupt stream). None is *not* "no body": a recogniser must treat it as a
    body it could not read (see :class:`UnreadableBodyError`)."""
    try:
        return decode_body(request, limit)
    except UnreadableBodyError:
        return None

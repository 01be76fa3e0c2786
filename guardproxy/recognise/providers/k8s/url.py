"""A request target as kube-apiserver's Go runtime reads it: path, segments, query values.

kube-apiserver is a Go ``net/http`` server. It parses the request target with
``url.ParseRequestURI`` and everything after that works on the *decoded* path:
``RequestInfoFactory.NewRequestInfo`` splits ``req.URL.Path`` with
``strings.Split(strings.Trim(path, "/"), "/")`` (kubernetes/kubernetes
``staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go``, ``splitPath``), the
handler chain's ``director`` and go-restful's ``CurlyRouter`` route on the same
``req.URL.Path`` (``staging/src/k8s.io/apiserver/pkg/server/handler.go``;
emicklei/go-restful ``curly.go``, ``route.go: tokenizePath``), and query options come from
``req.URL.Query()``. So ``%2F`` in a name is a path separator to the API server and
``%65xec`` is ``exec``: this module ports the pieces of golang/go ``src/net/url/url.go``
involved (``parse`` with ``viaRequest``, ``unescape`` in path and query-component mode,
``parseQuery``) byte for byte, so the recogniser reads the same segments and values.

Nothing in that chain cleans dot segments: no ``http.ServeMux`` sits in front (the
director dispatches go-restful and the non-go-restful mux itself), so ``..`` is a
literal segment to RequestInfo and to routing, and storage refuses ``.`` and ``..`` as
key segments (``staging/src/k8s.io/apiserver/pkg/storage/interfaces.go: PrepareKey``).
A proxy in front of the API server may clean them, though (nginx, Envoy, Go's
``ServeMux`` in ``kubectl proxy``), so :func:`path_readings` also returns the cleaned
paths for the recogniser to decide as further readings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "GoUrlError",
    "RequestTarget",
    "go_path_clean",
    "parse_query",
    "parse_target",
    "path_readings",
    "remove_dot_segments",
    "split_path",
    "unescape",
]

_HEX = b"0123456789abcdefABCDEF"
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


class GoUrlError(ValueError):
    """``url.ParseRequestURI`` (or an unescape) fails: the server answers 400."""


def _is_hex(byte: int) -> bool:
    return byte in _HEX


def unescape(raw: bytes, *, query: bool) -> bytes:
    """``url.unescape`` in ``encodePath`` (``query=False``) or ``encodeQueryComponent`` mode.

    Every ``%`` must be followed by two hex digits (else :class:`GoUrlError`); ``%XX``
    becomes the byte ``0xXX`` whatever it is (``%2F`` is ``/``, ``%00`` a NUL); ``+`` is
    a space only in query mode.
    """
    if b"%" not in raw and not (query and b"+" in raw):
        return raw
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte == 0x25:  # %
            if i + 2 >= n or not _is_hex(raw[i + 1]) or not _is_hex(raw[i + 2]):
                raise GoUrlError(f"invalid URL escape {raw[i : i + 3]!r}")
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
            continue
        out.append(0x20 if (byte == 0x2B and query) else byte)
        i += 1
    return bytes(out)


def _text(raw: bytes) -> str:
    """Go strings are bytes; names that are not UTF-8 are invalid Kubernetes names anyway,
    so they only need to stay distinct from valid ones and be printable."""
    return raw.decode("utf-8", "replace")


def _wire(text: str) -> bytes:
    # mitmproxy hands the target over as str (bytes beyond UTF-8 as surrogate escapes)
    return text.encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """An origin-form request target as ``url.ParseRequestURI`` leaves it."""

    raw_path: bytes  # before unescaping (``RawPath`` when it differs)
    path: str  # ``URL.Path``: unescaped
    raw_query: bytes  # ``URL.RawQuery``: everything after the first "?"


def parse_target(target: str) -> RequestTarget:
    """``url.ParseRequestURI(target)`` for the origin form an API server receives.

    Port of ``parse(rawURL, viaRequest=true)``: control bytes are refused, the query is
    everything after the first ``?`` (a ``#`` is *not* a fragment here: the function
    "assumes that rawURL was received in an HTTP request" and keeps it in the path or
    query), the path must start with ``/`` (a leading ``//`` is a path, not an
    authority, when there is no scheme) and is unescaped in ``encodePath`` mode.
    """
    raw = _wire(target)
    if _CONTROL.search(raw):
        raise GoUrlError("net/url: invalid control character in URL")
    if raw == b"*":
        return RequestTarget(b"*", "*", b"")
    if raw.endswith(b"?") and raw.count(b"?") == 1:  # ForceQuery
        rest, raw_query = raw[:-1], b""
    else:
        rest, _, raw_query = raw.partition(b"?")
    if not rest.startswith(b"/"):
        raise GoUrlError("invalid URI for request")
    return RequestTarget(rest, _text(unescape(rest, query=False)), raw_query)


def parse_query(raw_query: bytes) -> dict[str, list[str]]:
    """``url.ParseQuery`` as ``URL.Query()`` uses it: invalid pairs silently dropped.

    Pairs are separated by ``&`` only; a pair containing ``;`` is dropped (Go 1.17+),
    as is one whose key or value has a bad ``%`` escape; a pair without ``=`` has the
    empty value; an empty pair is skipped. Every value of a repeated key is kept, in
    order.
    """
    values: dict[str, list[str]] = {}
    for pair in raw_query.split(b"&"):
        if b";" in pair or not pair:
            continue
        key, _, value = pair.partition(b"=")
        try:
            decoded_key = _text(unescape(key, query=True))
            decoded_value = _text(unescape(value, query=True))
        except GoUrlError:
            continue
        values.setdefault(decoded_key, []).append(decoded_value)
    return values


def split_path(path: str) -> list[str]:
    """``splitPath`` of requestinfo.go: trim every leading and trailing ``/``, then split
    on ``/`` (inner empty segments are kept)."""
    trimmed = path.strip("/")
    return trimmed.split("/") if trimmed else []


def go_path_clean(path: str) -> str:
    """Go's ``path.Clean`` (what ``http.ServeMux`` redirects to): repeated slashes
    merged, ``.`` dropped, ``..`` removes the element before it (never above the root),
    no trailing slash. Port of golang/go ``src/path/path.go: Clean`` for rooted paths."""
    out: list[str] = []
    for element in path.split("/"):
        if element in ("", "."):
            continue
        if element == "..":
            if out:
                out.pop()
            continue
        out.append(element)
    return "/" + "/".join(out)


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 §5.2.4 on the raw path (what URL normalisers such as Envoy's
    ``normalize_path`` do before forwarding); empty segments are kept."""
    output: list[bytes] = []
    segments = path.split(b"/")
    for index, segment in enumerate(segments[1:], start=1):
        last = index == len(segments) - 1
        if segment == b".":
            if last:
                output.append(b"")
            continue
        if segment == b"..":
            if output:
                output.pop()
            if last:
                output.append(b"")
            continue
        output.append(segment)
    return b"/" + b"/".join(output)


_DOT_SEGMENT = re.compile(r"(^|/)\.\.?(/|$)")


def _unclean(path: str) -> bool:
    return "//" in path or ("." in path and bool(_DOT_SEGMENT.search(path)))


def path_readings(target: RequestTarget) -> list[str]:
    """The decoded path the API server routes on, then (when it has dot segments or
    empty segments) the paths a normalising proxy in front of it would forward instead:
    the decoded path cleaned as Go's ``path.Clean`` does (nginx and Go muxes decode
    first), and the raw path with dot segments removed, then decoded (Envoy, RFC 3986).
    """
    readings = [target.path]
    if not (_unclean(target.path) or _unclean(_text(target.raw_path))):
        return readings
    cleaned = go_path_clean(target.path)
    try:
        raw_cleaned = _text(unescape(remove_dot_segments(target.raw_path), query=False))
    except GoUrlError:  # cannot happen: the raw path already unescaped once
        raw_cleaned = cleaned
    for path in (cleaned, raw_cleaned):
        if path not in readings:
            readings.append(path)
    return readings

"""``aws-chunked`` uploads whose chunks are signed (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``
and its ``-TRAILER`` form): every chunk carries a signature chained from the request's
(the seed), so re-signing the request means re-signing every chunk.

The body is read as S3 reads it (AWS S3 API reference, "Signature Calculations for the
Authorization Header: Transferring Payload in Multiple Chunks" and "...Including
Trailing Headers"):

    <hex size>;chunk-signature=<64 hex>\\r\\n<size bytes>\\r\\n   (repeated)
    0;chunk-signature=<64 hex>\\r\\n
    [<trailer name>:<value>\\r\\n ... x-amz-trailer-signature:<64 hex>\\r\\n]   (-TRAILER)
    \\r\\n

A chunk's string to sign is ``AWS4-HMAC-SHA256-PAYLOAD``, the timestamp, the scope,
the previous signature, the SHA-256 of the empty string and of the chunk's data; the
trailer's is ``AWS4-HMAC-SHA256-TRAILER``, the timestamp, the scope, the last chunk's
signature and the SHA-256 of the trailer lines (``name:value\\n`` each). Only the
framing is ours: every signature is computed by botocore's ``SigV4Auth.signature``
(the request's derived key, HMAC-SHA256). Anything that does not parse exactly is
refused: the body is never passed on half-understood.

``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` (botocore's own aws-chunked uploads) carries no
chunk signatures: its body passes unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from guardproxy.broker.rewrite import AuthError

SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_SIGNATURE_FIELD = b";chunk-signature="
_TRAILER_SIGNATURE = b"x-amz-trailer-signature:"
_MAX_SIZE_DIGITS = 16


def is_signed(payload: str) -> bool:
    return payload in (SIGNED, SIGNED_TRAILER)


@dataclass(frozen=True)
class _Body:
    chunks: list[tuple[bytes, bytes, str]]  # (size line text, data, signature)
    trailers: list[bytes]  # "name:value" lines, without CRLF
    trailer_signature: str


def _malformed(why: str) -> AuthError:
    return AuthError("IncompleteBody", f"the aws-chunked body is malformed: {why}")


def _parse(body: bytes, *, trailer: bool) -> _Body:
    chunks: list[tuple[bytes, bytes, str]] = []
    position = 0
    while True:
        end = body.find(b"\r\n", position)
        if end < 0:
            raise _malformed("a chunk header has no end")
        line = body[position:end]
        size_text, found, signature = line.partition(_SIGNATURE_FIELD)
        if not found or not 0 < len(size_text) <= _MAX_SIZE_DIGITS:
            raise _malformed("a chunk has no signature")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _malformed("a chunk size is not hexadecimal") from None
        if size_text.lower() != size_text or len(signature) != 64:
            raise _malformed("a chunk header is not in the canonical form")
        start = end + 2
        data = body[start : start + size]
        if len(data) != size:
            raise _malformed("a chunk is shorter than its size")
        chunks.append((size_text, data, signature.decode("ascii", "replace")))
        position = start + size
        if size == 0:
            break
        if body[position : position + 2] != b"\r\n":
            raise _malformed("a chunk does not end with CRLF")
        position += 2
    trailers: list[bytes] = []
    trailer_signature = ""
    if trailer:
        while True:
            end = body.find(b"\r\n", position)
            if end < 0:
                raise _malformed("a trailer has no end")
            line = body[position:end]
            position = end + 2
            if line.startswith(_TRAILER_SIGNATURE):
                trailer_signature = line[len(_TRAILER_SIGNATURE) :].decode("ascii", "replace")
                break
            if b":" not in line:
                raise _malformed("a trailer line is not name:value")
            trailers.append(line)
        if len(trailer_signature) != 64:
            raise _malformed("the trailer signature is missing")
    if body[position:] != b"\r\n":
        raise _malformed("bytes follow the last chunk")
    return _Body(chunks, trailers, trailer_signature)


def _chunk_to_sign(timestamp: str, scope: str, previous: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", timestamp, scope, previous, _EMPTY_SHA256,
                      digest])  # fmt: skip


def _trailer_to_sign(timestamp: str, scope: str, previous: str, trailers: list[bytes]) -> str:
    canonical = b"".join(line + b"\n" for line in trailers)
    digest = hashlib.sha256(canonical).hexdigest()
    return "\n".join(["AWS4-HMAC-SHA256-TRAILER", timestamp, scope, previous, digest])


def verify(
    body: bytes, payload: str, signer: Any, request: Any, seed: str, timestamp: str, scope: str
) -> None:
    """AuthError unless every chunk (and the trailer) is signed in the chain from
    ``seed`` by ``signer``'s key."""
    parsed = _parse(body, trailer=payload == SIGNED_TRAILER)
    previous = seed
    for _, data, signature in parsed.chunks:
        expected = signer.signature(_chunk_to_sign(timestamp, scope, previous, data), request)
        if not hmac.compare_digest(expected, signature):
            raise AuthError("SignatureDoesNotMatch", "a chunk signature does not match")
        previous = signature
    if payload == SIGNED_TRAILER:
        to_sign = _trailer_to_sign(timestamp, scope, previous, parsed.trailers)
        if not hmac.compare_digest(signer.signature(to_sign, request), parsed.trailer_signature):
            raise AuthError("SignatureDoesNotMatch", "the trailer signature does not match")


def resign(
    body: bytes, payload: str, signer: Any, request: Any, seed: str, timestamp: str, scope: str
) -> bytes:
    """The same chunks and trailers, signed in the chain from the new ``seed``."""
    parsed = _parse(body, trailer=payload == SIGNED_TRAILER)
    out = bytearray()
    previous = seed
    for size_text, data, _ in parsed.chunks:
        signature = signer.signature(_chunk_to_sign(timestamp, scope, previous, data), request)
        out += size_text + _SIGNATURE_FIELD + signature.encode("ascii") + b"\r\n" + data
        if data:
            out += b"\r\n"
        previous = signature
    if payload == SIGNED_TRAILER:
        for line in parsed.trailers:
            out += line + b"\r\n"
        to_sign = _trailer_to_sign(timestamp, scope, previous, parsed.trailers)
        out += _TRAILER_SIGNATURE + signer.signature(to_sign, request).encode("ascii") + b"\r\n"
    out += b"\r\n"
    return bytes(out)


__all__ = ["SIGNED", "SIGNED_TRAILER", "UNSIGNED_TRAILER", "is_signed", "resign", "verify"]

"""Request bodies as the server's application reads them: every coding removed, or none.

``decode_body`` (recognise/common.py) is what every recogniser reads bodies through; a
body it cannot read raises, and ``decoded_body`` turns that into None, which a
recogniser must treat as "could not read", never as "no body".
"""

from __future__ import annotations

import gzip
import os
import tracemalloc
import zlib
from collections.abc import Callable

import brotli
import pytest
from backports import zstd

from guardproxy.recognise.common import (
    MAX_CODINGS,
    UnreadableBodyError,
    body_codings,
    decode_body,
    decoded_body,
)
from guardproxy.recognise.request import HttpRequest

TEXT = b'{"name": "prod-db", "skip_final_snapshot": true}' * 3


def request(body: bytes, *headers: tuple[str, str]) -> HttpRequest:
    return HttpRequest("POST", "https", "api.example.com", 443, "/x", headers, body)


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


CODINGS: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", raw_deflate),  # raw deflate: what browsers send, what many servers take
    ("br", brotli.compress),
    ("zstd", zstd.compress),
    ("identity", lambda b: b),
]


@pytest.mark.parametrize(("coding", "encode"), CODINGS)
def test_each_coding_is_removed(coding: str, encode: Callable[[bytes], bytes]) -> None:
    assert decode_body(request(encode(TEXT), ("content-encoding", coding))) == TEXT
    assert decode_body(request(encode(TEXT), ("content-encoding", f" {coding.upper()} "))) == TEXT


def test_stacked_codings_are_removed_last_applied_first() -> None:
    body = zstd.compress(brotli.compress(gzip.compress(TEXT)))
    assert decode_body(request(body, ("content-encoding", "gzip, br,zstd"))) == TEXT
    # RFC 9110: several field lines are one list, in order
    lines = (("content-encoding", "gzip"), ("content-encoding", "br, zstd"))
    assert decode_body(request(body, *lines)) == TEXT
    assert decode_body(request(gzip.compress(TEXT), ("content-encoding", "identity, gzip"))) == TEXT


def test_a_gzip_transfer_coding_is_removed_after_the_content_codings() -> None:
    """mitmproxy removes the chunked framing only; `gzip, chunked` stays in raw_content."""
    body = gzip.compress(brotli.compress(TEXT))
    headers = (("content-encoding", "br"), ("transfer-encoding", "gzip, chunked"))
    assert body_codings(request(body, *headers)) == ["br", "gzip"]
    assert decode_body(request(body, *headers)) == TEXT
    assert decode_body(request(TEXT, ("transfer-encoding", "chunked"))) == TEXT


def test_a_body_without_codings_is_as_sent() -> None:
    assert decode_body(request(TEXT)) == TEXT
    assert decode_body(request(b"", ("content-encoding", "gzip"))) == b""  # nothing to decode


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("compress", b"\x1f\x9d\x90" + TEXT),  # LZW: no decoder here
        ("aws-chunked", TEXT),
        ("gzip;q=1", gzip.compress(TEXT)),
        ("gzip", TEXT),  # says gzip, is not
        ("gzip", gzip.compress(TEXT)[:-4]),  # ends early
        ("gzip", gzip.compress(TEXT) + gzip.compress(b"more")),  # a second member
        ("gzip", gzip.compress(TEXT) + b"\x00"),  # data after the stream
        ("deflate", zlib.compress(TEXT)[:-2]),
        ("br", brotli.compress(TEXT)[:-2]),
        ("br", brotli.compress(TEXT) + b"x"),
        ("zstd", zstd.compress(TEXT) + zstd.compress(b"more")),  # a second frame
        ("zstd", zstd.compress(TEXT)[:-3]),
        ("gzip, gzip", gzip.compress(TEXT)),  # one layer short
    ],
)
def test_a_body_that_does_not_decode_is_unreadable(coding: str, body: bytes) -> None:
    with pytest.raises(UnreadableBodyError):
        decode_body(request(body, ("content-encoding", coding)))
    assert decoded_body(request(body, ("content-encoding", coding))) is None


def test_more_codings_than_any_client_stacks_are_unreadable() -> None:
    body = TEXT
    for _ in range(MAX_CODINGS + 1):
        body = gzip.compress(body)
    coding = ", ".join(["gzip"] * (MAX_CODINGS + 1))
    with pytest.raises(UnreadableBodyError, match="stacked"):
        decode_body(request(body, ("content-encoding", coding)))


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", brotli.compress),
        ("zstd", zstd.compress),
    ],
)
def test_a_decompression_bomb_stops_at_the_limit(
    coding: str, encode: Callable[[bytes], bytes]
) -> None:
    """64 MiB of zeros compress to kilobytes; decoding stops past the 1 MiB limit
    instead of holding 64 MiB."""
    limit = 1 << 20
    bomb = encode(bytes(64 << 20))
    assert len(bomb) < limit
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableBodyError, match="more than"):
            decode_body(request(bomb, ("content-encoding", coding)), limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * limit


def test_a_zstd_window_over_8_mib_is_refused() -> None:
    """RFC 9659 limits a zstd content coding's window to 8 MiB; the frame header picks
    the decoder's memory, so a larger one is refused."""
    compressor = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: 25})
    body = compressor.compress(os.urandom(1 << 20) * 12, mode=zstd.ZstdCompressor.FLUSH_FRAME)
    with pytest.raises(UnreadableBodyError, match="zstd"):
        decode_body(request(body, ("content-encoding", "zstd")), 64 << 20)


def test_the_limit_applies_to_bodies_as_sent_and_decoded() -> None:
    assert decoded_body(request(TEXT), limit=len(TEXT) - 1) is None
    small = gzip.compress(TEXT)
    assert decoded_body(request(small, ("content-encoding", "gzip")), limit=len(TEXT) - 1) is None
    assert decoded_body(request(small, ("content-encoding", "gzip")), limit=len(TEXT)) == TEXT

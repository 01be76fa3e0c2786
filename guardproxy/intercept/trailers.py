"""HTTP/1 chunked trailers are refused as a protocol error, not a crash.

mitmproxy 12 reads chunked bodies with h11's ``ChunkedReader`` and raises
``NotImplementedError("HTTP trailers are not implemented yet.")`` when the last chunk
carries trailer fields (``mitmproxy/proxy/layers/http/_http1.py``, ``read_body``). That
exception escapes the layer: mitmproxy logs "mitmproxy has crashed!", nothing is
forwarded, but the client is never answered and waits for its own time-out. A request
with trailers (fields the guard could not judge) must fail at once instead: its body
becomes an HTTP/1 protocol error, which mitmproxy answers by closing the connection
(an error found in a body is not answered with a status) and logs with the cause; a
response with trailers fails the same way towards the client.

:func:`refuse_trailers` replaces the reader mitmproxy's HTTP/1 layer builds for chunked
bodies by one that raises ``h11.RemoteProtocolError`` for trailers, the error mitmproxy
already turns into a closed connection and a protocol-error answer. It fails loudly
(``RuntimeError`` at start-up) when mitmproxy no longer has the hook it patches.
"""

from __future__ import annotations

import h11
from h11._readers import ChunkedReader
from mitmproxy.proxy.layers.http import _http1

TRAILERS_REFUSED = (
    "chunked trailer fields are not accepted by guardproxy; send the same request without trailers"
)


class _TrailerRefusingReader(ChunkedReader):
    """h11's chunked reader, with trailer fields a protocol error."""

    def __call__(self, buf: h11._receivebuffer.ReceiveBuffer) -> h11.Data | h11.EndOfMessage | None:
        event = super().__call__(buf)
        if isinstance(event, h11.EndOfMessage) and event.headers:
            raise h11.RemoteProtocolError(TRAILERS_REFUSED)
        return event


def refuse_trailers() -> None:
    """Make mitmproxy's HTTP/1 layer refuse chunked trailers (idempotent)."""
    if getattr(_http1, "ChunkedReader", None) not in (ChunkedReader, _TrailerRefusingReader):
        raise RuntimeError(
            "mitmproxy's HTTP/1 layer no longer reads chunked bodies with h11's "
            "ChunkedReader; guardproxy/intercept/trailers.py must follow it"
        )
    setattr(_http1, "ChunkedReader", _TrailerRefusingReader)  # noqa: B010


__all__ = ["TRAILERS_REFUSED", "refuse_trailers"]

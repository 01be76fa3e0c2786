"""HTTP plumbing shared by the e2e upstream servers: recording, TLS, bounded I/O, teardown."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import parse_qs, urlsplit

from .pki import ThrowawayPki, load_cert_chain

JSON = dict[str, Any]

CONNECTION_TIMEOUT = 5.0
"""Seconds a connection may sit idle (or a TLS handshake may take) before it is dropped."""

MAX_BODY = 64 * 1024 * 1024
"""Request bodies above this are refused; nothing in the e2e suite comes close."""

LOOPBACK = "127.0.0.1"

GUARD_AGENT = "guardproxy-impact"
"""What the guard's own calls to an upstream carry in their User-Agent."""


# --------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the upstream saw it, after any proxy in between."""

    method: str
    target: str
    """The request target as sent: path and query (absolute URL if sent as to a proxy)."""
    headers: tuple[tuple[str, str], ...]
    body: bytes
    client_cn: str | None = None
    """Common name of the verified TLS client certificate, if one was presented."""
    at: float = field(default_factory=time.monotonic)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), or None."""
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    @property
    def by_guard(self) -> bool:
        """Made by the guard itself (an impact preview's read, a safety step), which
        names itself ``guardproxy-impact`` in its User-Agent: not the agent's traffic."""
        return GUARD_AGENT in (self.header("User-Agent") or "")


class RequestLog:
    """Thread-safe, append-only record of requests; handler threads write, tests read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[RecordedRequest] = []

    def append(self, request: RecordedRequest) -> None:
        with self._lock:
            self._items.append(request)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def matching(self, method: str | None = None, path_prefix: str = "") -> list[RecordedRequest]:
        """Requests with this method (any if None) whose path starts with ``path_prefix``."""
        return [
            r
            for r in self.snapshot()
            if (method is None or r.method == method) and r.path.startswith(path_prefix)
        ]


# --------------------------------------------------------------------- HTTP foundations


def peer_subject(sock: socket.socket, attribute: str) -> list[str]:
    """Values of ``attribute`` (e.g. commonName) in the verified peer certificate's subject."""
    if not isinstance(sock, ssl.SSLSocket):
        return []
    cert = sock.getpeercert() or {}
    subject = cast(tuple[tuple[tuple[str, str], ...], ...], cert.get("subject", ()))
    return [value for rdn in subject for key, value in rdn if key == attribute]


def _peer_common_name(sock: socket.socket) -> str | None:
    names = peer_subject(sock, "commonName")
    return names[0] if names else None


class _LoopbackHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that owns a request log, optional TLS, and its live connections.

    The TLS handshake is deferred to the handler thread (``do_handshake_on_connect=False``)
    so one slow or hostile client cannot stall the accept loop.  Live connections are
    tracked so :meth:`close_connections` can unblock handler threads at teardown.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        log: RequestLog,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.log = log
        self.ssl_context = ssl_context
        self.upstream: object = None
        """The :class:`UpstreamServer` owning this server; handlers reach state through it."""
        self.stopping = threading.Event()
        self.tls_failures: list[str] = []
        self.handler_errors: list[str] = []
        self._live: set[socket.socket] = set()
        self._live_lock = threading.Lock()
        super().__init__((LOOPBACK, 0), handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        sock.settimeout(CONNECTION_TIMEOUT)
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        with self._live_lock:
            self._live.add(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        with self._live_lock:
            self._live.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about I/O errors, report real bugs.

        Clients hanging up mid-stream and failed handshakes are expected here (that is
        what a proxy refusing a request looks like).  Anything else is a bug in a fake
        server: keep it in ``handler_errors`` and print the traceback.
        """
        exc = sys.exception()
        if isinstance(exc, OSError):
            return
        self.handler_errors.append(f"{type(exc).__name__}: {exc}")
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._live_lock:
            live = list(self._live)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class BaseHandler(BaseHTTPRequestHandler):
    """Base request handler: HTTP/1.1, bounded reads, chunked I/O, JSON, recording."""

    protocol_version = "HTTP/1.1"
    timeout = CONNECTION_TIMEOUT
    server: _LoopbackHTTPServer
    server_version = "guardproxy-e2e"

    def setup(self) -> None:
        sock = self.request
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                self.server.tls_failures.append(f"{type(exc).__name__}: {exc}")
                raise
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # ---- request side

    def read_body(self) -> bytes:
        """Read the request body, de-chunking it if needed (git pushes arrive chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size_line = self.rfile.readline(1024)
            if not size_line:
                raise ConnectionError("connection closed inside a chunked body")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(out)
            if len(out) + size > MAX_BODY:
                raise ValueError("request body too large")
            out += self.rfile.read(size)
            self.rfile.readline(16)

    def record(self, body: bytes) -> RecordedRequest:
        entry = RecordedRequest(
            method=self.command,
            target=self.path,
            headers=tuple((k, v) for k, v in self.headers.items()),
            body=body,
            client_cn=_peer_common_name(self.request),
        )
        self.server.log.append(entry)
        return entry

    # ---- response side

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra_headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, payload: Any) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), "application/json")

    def start_chunked(self, status: int, content_type: str) -> None:
        """Send headers for a streamed body; follow with write_chunk() and end_chunked()."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        """Write one chunk and push it out now; raises OSError once the client is gone."""
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def pause(self, seconds: float) -> bool:
        """Sleep unless the server is stopping; True if the server is still running."""
        return not self.server.stopping.wait(seconds)


class UpstreamServer:
    """Start/stop plumbing shared by every upstream: port, url, request log, teardown."""

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.log = RequestLog()
        self._httpd = _LoopbackHTTPServer(handler, self.log, ssl_context)
        self._httpd.upstream = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def url(self) -> str:
        scheme = "https" if self._httpd.ssl_context is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """The agent's requests received so far, oldest first (the guard's own impact
        reads and safety steps left out: see :attr:`all_requests`)."""
        return [r for r in self.log.snapshot() if not r.by_guard]

    @property
    def all_requests(self) -> list[RecordedRequest]:
        """Every request received so far, the guard's own included, oldest first."""
        return self.log.snapshot()

    @property
    def handler_errors(self) -> list[str]:
        """Unexpected exceptions in request handlers (bugs in the fake server)."""
        return list(self._httpd.handler_errors)

    @property
    def tls_failures(self) -> list[str]:
        """Handshakes that failed (e.g. a client without an acceptable certificate)."""
        return list(self._httpd.tls_failures)

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.close_connections()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def server_tls_context(
    pki: ThrowawayPki, client_ca_pem: bytes | None = None, require_client_cert: bool = True
) -> ssl.SSLContext:
    """Server-side TLS context with the PKI's server certificate.

    With ``client_ca_pem`` the server verifies client certificates against it:
    mandatory (``CERT_REQUIRED``, the handshake fails without one) or optional
    (``CERT_OPTIONAL``, the request arrives and the server can answer 401).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    load_cert_chain(ctx, pki.server)
    if client_ca_pem is not None:
        ctx.load_verify_locations(cadata=client_ca_pem.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx

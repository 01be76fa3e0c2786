"""A real HTTP receiver on 127.0.0.1 for notification tests: records every POST and
answers with scripted statuses (fail the first N, or always)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.monotonic)

    def json(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


class Receiver:
    """``fail_first`` POSTs get ``fail_status``, the rest 200 (or ``fail_status`` forever
    when ``always_fail``)."""

    def __init__(self, *, fail_first: int = 0, fail_status: int = 503, always_fail: bool = False):
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.always_fail = always_fail
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    failing = receiver.always_fail or len(receiver.received) < receiver.fail_first
                    status = receiver.fail_status if failing else 200
                    receiver.received.append(Received(dict(self.headers.items()), body, status))
                    receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first ``count`` requests, once they arrived (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"expected {count} requests, got {len(self.received)}"
                self._changed.wait(left)
            return list(self.received[:count])

    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.status == 200]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

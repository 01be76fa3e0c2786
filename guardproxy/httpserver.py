"""One tornado application served on one address, the way guardproxy's ports are.

Shared by the control API (control/api.py) and the metrics port (ops/http.py); it lives
outside both packages so that neither imports the other for it (imports nothing of
guardproxy).
"""

from __future__ import annotations

import structlog
import tornado.netutil
import tornado.web
from tornado.httpserver import HTTPServer

log = structlog.get_logger(__name__)


class AppServer:
    """Serves ``app`` on ``host:port``; port 0 picks a free one, known after :meth:`start`."""

    def __init__(
        self,
        app: tornado.web.Application,
        host: str,
        port: int,
        *,
        name: str,
        max_body_size: int | None = None,
    ) -> None:
        """``max_body_size``: bodies larger are refused before they are read (tornado's
        default, 100 MB, when None)."""
        self._app = app
        self._host = host
        self._port = port
        self._name = name
        self._max_body_size = max_body_size
        self._server: HTTPServer | None = None

    async def start(self) -> int:
        server = HTTPServer(self._app, xheaders=False, max_body_size=self._max_body_size)
        sockets = tornado.netutil.bind_sockets(self._port, address=self._host)
        server.add_sockets(sockets)
        self._server = server
        self._port = sockets[0].getsockname()[1]
        log.info(f"{self._name}.listening", address=f"{self._host}:{self._port}")
        return self._port

    @property
    def port(self) -> int:
        return self._port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None

"""The host side of an enforced session's only way out: a unix socket served here.

The socket lives in the session's run directory, which is bind-mounted into the
sandbox; each connection to it is joined to the guard's proxy listener (TCP) and the
bytes pass unchanged: the in-sandbox helper speaks HTTP proxy to it (``CONNECT
host:port`` with the session credential, or a proxy-aware client's own requests), so
the guard decides exactly as it does for a cooperative session. Nothing but the
guard's proxy is reachable through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path

CHUNK = 256 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


class HostBridge:
    """A unix-socket server in a thread of its own; start() returns once it listens."""

    def __init__(self, socket_path: Path, proxy_host: str, proxy_port: int) -> None:
        self.socket_path = socket_path
        self._proxy = (proxy_host, proxy_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="sandbox-bridge", daemon=True
        )
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> HostBridge:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(timeout=10)
        return self

    async def _listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.socket_path), limit=CHUNK
        )
        os.chmod(self.socket_path, 0o600)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                *self._proxy, limit=CHUNK
            )
        except OSError:
            writer.transport.abort()
            return
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            writer.close()
            upstream_writer.close()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


__all__ = ["HostBridge"]

"""``/healthz``, ``/readyz`` and ``/metrics``: for orchestrators and Prometheus.

They carry no bearer token: liveness probes and scrapers usually have none, and
what they expose (counts, digests, ok/not ok) holds no secret and changes nothing.
They are served on the control port (loopback by default) and, with
``metrics_listen``, on a port of their own that serves nothing else, e.g. for a
scraper on another network than the approvers.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import structlog
import tornado.netutil
import tornado.web

from guardproxy.httpserver import AppServer
from guardproxy.metrics import CONTENT_TYPE
from guardproxy.ops.reload import ReloadReport

log = structlog.get_logger(__name__)


class Operations(Protocol):
    """What a running guardproxy offers its operators."""

    async def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    async def metrics_page(self) -> bytes: ...

    async def reload_policies(self, source: str) -> ReloadReport: ...


class _OpsHandler(tornado.web.RequestHandler):
    def initialize(self, ops: Operations) -> None:
        self.ops = ops

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(value))


class HealthHandler(_OpsHandler):
    """Liveness: the process answers."""

    def get(self) -> None:
        self.write_json({"ok": True, "status": "alive"})


class ReadyHandler(_OpsHandler):
    """Readiness: policies loaded, store answering a real query, proxy listening."""

    async def get(self) -> None:
        ready, checks = await self.ops.readiness()
        self.write_json({"ok": ready, "checks": checks}, 200 if ready else 503)


class MetricsHandler(_OpsHandler):
    async def get(self) -> None:
        page = await self.ops.metrics_page()
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(page)


def ops_routes(ops: Operations) -> list[Any]:
    extra = {"ops": ops}
    return [
        (r"/healthz", HealthHandler, extra),
        (r"/readyz", ReadyHandler, extra),
        (r"/metrics", MetricsHandler, extra),
    ]


def make_ops_app(ops: Operations) -> tornado.web.Application:
    """The metrics port's application: probes and metrics, nothing that acts."""
    return tornado.web.Application(ops_routes(ops), autoreload=False, debug=False)


class OpsServer(AppServer):
    """The ``metrics_listen`` port: probes and metrics only."""

    def __init__(self, ops: Operations, host: str, port: int) -> None:
        super().__init__(make_ops_app(ops), host, port, name="metrics")

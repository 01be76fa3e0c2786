"""One running guardproxy: store, policy bundle, gate, proxy and control API, wired."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog

from guardproxy.approvals.events import HoldEvents
from guardproxy.config import ProxyConfig, split_host_port
from guardproxy.control.api import ControlContext, ControlServer
from guardproxy.gate.gate import Clock, Gate, utc_now
from guardproxy.intercept.proxy import GuardProxy, ensure_ca
from guardproxy.policy import Bundle, load_bundle
from guardproxy.recognise import warm_up
from guardproxy.recognise.request import RecogniseSettings
from guardproxy.session.history import HistorySettings, SessionHistory
from guardproxy.session.registry import SessionRegistry
from guardproxy.store import open_store
from guardproxy.store.base import Store, StoreError

log = structlog.get_logger(__name__)


class StartError(Exception):
    """guardproxy cannot start; the message says why and what to do."""


def prepare_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)


def control_token(config: ProxyConfig) -> str:
    """The control API's bearer token, created on first use, readable by its owner only."""
    path = config.control_token_file
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    return token


def load_policies(path: Path) -> Bundle:
    result = load_bundle([path])
    if result.bundle is None:
        details = "\n".join(str(p) for p in result.errors[:20]) or "no bundle found"
        raise StartError(
            f"the policy bundle {path} has errors; fix them (guardproxy policy lint {path}):\n"
            f"{details}"
        )
    return result.bundle


class Guardproxy:
    """start() brings everything up, stop() takes it down; both idempotent enough."""

    def __init__(self, config: ProxyConfig, *, clock: Clock = utc_now) -> None:
        self.config = config
        self._clock = clock
        self._store: Store | None = None
        self._bundle: Bundle | None = None
        self._shadow_bundle: Bundle | None = None
        self.proxy: GuardProxy | None = None
        self.control: ControlServer | None = None
        self.gate: Gate | None = None
        self.registry: SessionRegistry | None = None
        self.history: SessionHistory | None = None
        self.events = HoldEvents()
        """Hold lifecycle events (held, approval, approved, denied, expired, ...)."""
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise StartError("guardproxy is not started")
        return self._store

    @property
    def bundle(self) -> Bundle:
        if self._bundle is None:
            raise StartError("guardproxy is not started")
        return self._bundle

    def use_bundle(self, bundle: Bundle) -> None:
        """Decide with ``bundle`` from now on; held actions are re-checked against it."""
        self._bundle = bundle

    async def start(self) -> None:
        config = self.config
        prepare_data_dir(config.data_dir)
        ensure_ca(config.ca_dir)
        self._bundle = load_policies(config.policies)
        if config.shadow_policies is not None:
            self._shadow_bundle = load_policies(config.shadow_policies)
        # the AWS model index: milliseconds from its cache, seconds to build it once
        await asyncio.to_thread(warm_up)
        try:
            self._store = await asyncio.to_thread(open_store, config.store_url)
        except StoreError as error:
            raise StartError(f"cannot open the store {config.store_url}: {error}") from error
        self.registry = SessionRegistry(self._store)
        self.history = SessionHistory(
            self._store, HistorySettings(destructive_budget=config.destructive_budget)
        )
        self.gate = Gate(
            self._store,
            lambda: self.bundle,
            hold_window=config.hold_window_seconds,
            clock=self._clock,
            reads_on_store_failure=config.reads_on_store_failure,
            events=self.events,
            shadow=lambda: self._shadow_bundle,
        )
        self.gate.watch_store()
        settings = RecogniseSettings(
            environments=dict(config.environments),
            kubernetes_hosts=tuple(config.kubernetes_hosts),
        )
        control_host, control_port = split_host_port(config.control)
        self.control = ControlServer(
            ControlContext(
                store=self._store,
                gate=self.gate,
                registry=self.registry,
                token=control_token(config),
                clock=self._clock,
                proxy_port=lambda: self.proxy.port if self.proxy else 0,
                reload_tls=lambda: self.proxy.reload_upstream_trust() if self.proxy else None,
                runtime=self.runtime_info,
                events=self.events,
            ),
            control_host,
            control_port,
        )
        self.proxy = GuardProxy(
            config,
            self.gate,
            self.registry,
            settings,
            self.history,
            record_status=self._record_status,
            protected=self._protected,
            clock=self._clock,
        )
        try:
            await self.control.start()
            await self.proxy.start()
        except OSError as error:
            await self.stop()
            raise StartError(f"cannot listen: {error}") from error
        self._sweeper = asyncio.create_task(self.gate.run_sweeper(), name="hold-sweeper")
        self._write_runtime()
        log.info(
            "guardproxy.started",
            proxy=f"127.0.0.1:{self.proxy.port}",
            control=f"{control_host}:{self.control.port}",
            policies=str(config.policies),
            bundle=self.bundle.digest,
            rules=len(self.bundle.rules),
        )

    def _protected(self) -> set[tuple[str, int]]:
        """Addresses guarded sessions must never reach: the control API and the proxy."""
        addresses: set[tuple[str, int]] = set()
        if self.control is not None:
            addresses.add(("127.0.0.1", self.control.port))
        if self.proxy is not None:
            addresses.update(("127.0.0.1", port) for _, port in self.proxy.listen_addresses())
        return addresses

    def _record_status(self, decision_id: str, status: int) -> None:
        if self.gate is not None:
            self.gate.record_status(decision_id, status)

    async def reload_tls(self) -> None:
        """Trust the CAs a newly attached session brought (on the proxy's own loop)."""
        if self.proxy is not None:
            self.proxy.reload_upstream_trust()

    def runtime_info(self) -> dict[str, Any]:
        assert self.proxy is not None and self.control is not None
        return {
            "pid": os.getpid(),
            "proxy": f"127.0.0.1:{self.proxy.port}",
            "control": f"http://127.0.0.1:{self.control.port}",
            "ca_cert": str(self.proxy.ca_cert),
            "policies": str(self.config.policies),
            "bundle": self.bundle.digest,
        }

    def _write_runtime(self) -> None:
        info = self.runtime_info()
        path = self.config.runtime_file
        path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        os.chmod(path, 0o600)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self.proxy is not None:
            await self.proxy.stop()
        if self.control is not None:
            await self.control.stop()
        if self.gate is not None:
            await asyncio.to_thread(self.gate.flush)
            self.gate = None
        if self.history is not None:
            await asyncio.to_thread(self.history.flush)
            self.history = None
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
            self._store = None
        runtime = self.config.runtime_file
        if runtime.exists():
            try:
                info = json.loads(runtime.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                info = {}
            if info.get("pid") == os.getpid():
                runtime.unlink(missing_ok=True)
        log.info("guardproxy.stopped")


class BackgroundGuardproxy:
    """A guardproxy on its own event loop in a background thread.

    For callers that are not asyncio programs: `guardproxy run`, which supervises a
    child process meanwhile, and tests that drive real clients against it.
    """

    def __init__(self, config: ProxyConfig, *, clock: Clock = utc_now) -> None:
        self.service = Guardproxy(config, clock=clock)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="guardproxy", daemon=True
        )

    def call[R](self, coroutine: Coroutine[Any, Any, R], timeout: float = 30) -> R:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> BackgroundGuardproxy:
        self._thread.start()
        try:
            self.call(self.service.start())
        except BaseException:
            self._halt()
            raise
        return self

    def stop(self) -> None:
        try:
            self.call(self.service.stop())
        finally:
            self._halt()

    def _halt(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

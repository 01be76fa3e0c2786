"""One running guardproxy: store, policy bundle, gate, proxy and control API, wired."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

import structlog

from guardproxy.approvals.channels import HoldFacts
from guardproxy.approvals.events import HoldEvents
from guardproxy.approvals.notify import Notifications, NotifyConfigError, hold_facts
from guardproxy.approvals.oncall import OnCallRouting, schedule_problems
from guardproxy.approvals.paging import Pager, Paging, build_pagers
from guardproxy.approvals.schedules import OnCallConfigError, Schedules, build_schedules
from guardproxy.approvals.service import ApprovalService
from guardproxy.approvals.slack import SlackApi, SlackChat, SlackInteractions
from guardproxy.approvals.webapi import LazyTransport, SecretError, read_secret
from guardproxy.audit.checkpoint import AuditKeyError, Checkpointer, load_or_create_signing_key
from guardproxy.broker import Broker
from guardproxy.config import ProxyConfig, is_loopback, split_host_port
from guardproxy.control.api import ControlServer
from guardproxy.control.chat import ChatServer
from guardproxy.control.handler import ControlContext
from guardproxy.control.runtime import RuntimeFile
from guardproxy.gate.gate import Clock, Gate, utc_now
from guardproxy.gate.recorder import Writer
from guardproxy.gate.writer import ProcessWriter
from guardproxy.impact import ImpactService
from guardproxy.intercept.proxy import (
    GuardProxy,
    ProxyStartError,
    ensure_ca,
    upstream_trust_bundle,
)
from guardproxy.metrics import Metrics
from guardproxy.ops.http import OpsServer
from guardproxy.ops.listen import bind_problem, describe
from guardproxy.ops.reload import ReloadReport, bundle_fingerprint, reload_bundle
from guardproxy.ops.startup import (
    CONTROL_TOKEN_PREFIX,
    StartError,
    check_listeners,
    control_token,
    listeners,
    load_policies,
    new_control_token,
    one_line,
    open_broker,
    os_reason,
    own_addresses,
    prepare_data_dir,
    reachable_host,
    read_control_token,
)
from guardproxy.policy import Bundle
from guardproxy.policy.loader import is_shipped_bundle
from guardproxy.recognise import warm_up
from guardproxy.recognise.request import RecogniseSettings
from guardproxy.redact import redact_url
from guardproxy.session.history import HistorySettings, SessionHistory
from guardproxy.session.registry import SessionRegistry
from guardproxy.store import SqliteStore, commits_quickly, open_store
from guardproxy.store.base import HoldState, Store, StoreError

__all__ = [
    "CONTROL_TOKEN_PREFIX",
    "READY_QUERY_TIMEOUT",
    "SHUTDOWN_DRAIN_SECONDS",
    "BackgroundGuardproxy",
    "Guardproxy",
    "StartError",
    "check_listeners",
    "control_token",
    "listeners",
    "load_policies",
    "new_control_token",
    "prepare_data_dir",
]

log = structlog.get_logger(__name__)

READY_QUERY_TIMEOUT = 2.0
SHUTDOWN_DRAIN_SECONDS = 5.0


class Guardproxy:
    """start() brings everything up, stop() takes it down; both idempotent enough."""

    def __init__(
        self, config: ProxyConfig, *, clock: Clock = utc_now, take_over_runtime: bool = True
    ) -> None:
        """``take_over_runtime``: claim the data directory's runtime.json even while another
        live guard owns it (``serve``); False leaves it to that guard (``run``)."""
        self.config = config
        self._clock = clock
        self.runtime_file = RuntimeFile(config.runtime_file, take_over=take_over_runtime)
        self._store: Store | None = None
        self._bundle: Bundle | None = None
        self._shadow_bundle: Bundle | None = None
        self.proxy: GuardProxy | None = None
        self.control: ControlServer | None = None
        self.gate: Gate | None = None
        self.approvals: ApprovalService | None = None
        """Verdicts on holds, expiry and escalation (the control API and the sweeper)."""
        self.registry: SessionRegistry | None = None
        self.history: SessionHistory | None = None
        self.events = HoldEvents()
        """Hold lifecycle events (held, approval, approved, denied, expired, ...)."""
        self.notifications: Notifications | None = None
        self.schedules: Schedules | None = None
        """On-call schedules (None: no on-call routing configured)."""
        self.paging: Paging | None = None
        self.slack: SlackChat | None = None
        self.chat: ChatServer | None = None
        self._pagers: dict[str, Pager] = {}
        self._slack_secrets: tuple[str, str] | None = None
        self._api_transport = LazyTransport()
        self._sweeper: asyncio.Task[None] | None = None
        self._checkpointer: Checkpointer | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self.metrics = Metrics()
        self.ops_server: OpsServer | None = None
        self.broker: Broker | None = None
        """Session credentials in, real credentials out (README, Credential brokering)."""
        self.impact: ImpactService | None = None
        """Impact previews of new holds and safety steps before releases."""
        self._reload_lock = asyncio.Lock()
        self._watch_task: asyncio.Task[None] | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise StartError("guardproxy is not started")
        return self._store

    @property
    def bundle(self) -> Bundle:
        """The bundle in force (the gate's, which a reload swaps)."""
        if self.gate is not None:
            return self.gate.bundle
        if self._bundle is None:
            raise StartError("guardproxy is not started")
        return self._bundle

    def use_bundle(self, bundle: Bundle) -> None:
        """Decide with ``bundle`` from now on; held actions are re-checked against it."""
        if self.gate is not None:
            self.gate.swap_bundle(bundle)
        self._bundle = bundle

    async def start(self) -> None:
        """Open everything and start listening; on any failure, stop what was started.

        Every failure the operator can act on is a StartError whose message is one line.
        """
        try:
            await self._start()
        except BaseException as error:
            await self.stop()
            if isinstance(error, OSError):
                raise StartError(
                    f"cannot start: {os_reason(error)}; check the data directory "
                    "(--data-dir) and the files the configuration names"
                ) from error
            raise

    async def _start(self) -> None:
        config = self.config
        check_listeners(config)
        try:  # secrets first: a missing one stops startup before anything is opened
            self.notifications = Notifications.from_config(
                list(config.notifications), console_url=self.console_url, facts=self._hold_facts
            )
        except NotifyConfigError as error:
            raise StartError(str(error)) from error
        self._oncall_setup(config)
        prepare_data_dir(config.data_dir)
        self.broker = await asyncio.to_thread(open_broker, self.config)
        # the writer process imports while this one loads policies and opens the store
        starting = asyncio.create_task(asyncio.to_thread(self._decision_writer, config.store_url))
        try:
            bundle, store = await self._open(config)
        except BaseException:
            with contextlib.suppress(Exception):
                writer = await starting
                await asyncio.to_thread(writer.close, 5.0)
            raise
        self._bundle, self._store = bundle, store
        if warning := getattr(store, "durability_warning", None):  # PostgreSQL's settings
            log.warning("store.not_durable", problem=warning)
        try:  # the key that signs audit checkpoints, outside the database
            key = await asyncio.to_thread(load_or_create_signing_key, config.audit_key_file)
        except AuditKeyError as error:
            raise StartError(f"{error}; set audit_key in the configuration file") from error
        self._checkpointer = Checkpointer(
            store, key, clock=self._clock, interval=config.audit_checkpoint_seconds
        )
        self.impact = ImpactService(
            store, settings=config.impact, data_dir=config.data_dir, broker=self.broker,
            trust=lambda: upstream_trust_bundle(config), events=self.events, clock=self._clock,
        )  # fmt: skip
        try:
            writer = await starting
        except (StoreError, OSError, RuntimeError) as error:  # OSError, RuntimeError: spawning
            raise StartError(f"cannot record decisions: {one_line(error)}") from error
        self.gate = Gate(  # owns the writer from here: stop() closes it
            store,
            bundle,
            hold_window=config.hold_window_seconds,
            clock=self._clock,
            reads_on_store_failure=config.reads_on_store_failure,
            events=self.events,
            metrics=self.metrics,
            shadow=lambda: self._shadow_bundle,
            writer=writer,
            impact=self.impact,
            settles_inline=commits_quickly(store),
        )
        # a hold is released only if the bundle in force then still agrees
        self.approvals = ApprovalService(
            store, lambda: self.bundle, clock=self._clock, events=self.events, metrics=self.metrics,
            oncall=OnCallRouting(self.schedules, store) if self.schedules is not None else None,
            steps=self.impact,
        )  # fmt: skip
        self.gate.watch_approvals(self.approvals)
        self.registry = SessionRegistry(store)
        self.history = SessionHistory(
            store, HistorySettings(destructive_budget=config.destructive_budget)
        )
        self.gate.watch_store()
        settings = RecogniseSettings(
            environments=dict(config.environments),
            kubernetes_hosts=tuple(config.kubernetes_hosts),
        )
        control_host, control_port = split_host_port(config.control)
        self.control = ControlServer(
            ControlContext(
                store=store,
                approvals=self.approvals,
                registry=self.registry,
                token=read_control_token(self.config),
                clock=self._clock,
                proxy_port=lambda: self.proxy.port if self.proxy else 0,
                reload_tls=lambda: self.proxy.reload_upstream_trust() if self.proxy else None,
                runtime=self.runtime_info,
                events=self.events,
                ops=self,
                broker=self.broker,
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
            broker=self.broker,
        )
        if config.metrics_listen is not None:
            self.ops_server = OpsServer(self, *split_host_port(config.metrics_listen))
        self._chat_setup(config, store, self.approvals)
        await self._listen()
        self.notifications.start(self.events)
        if self.paging is not None:
            self.paging.start(self.events)
        if self.slack is not None:
            self.slack.start(self.events)
        self._sweeper = asyncio.create_task(self.approvals.run_sweeper(), name="hold-sweeper")
        self._checkpoints = asyncio.create_task(self._checkpointer.run(), name="audit-checkpoints")
        if config.watch_policies_seconds > 0:
            self._watch_task = asyncio.create_task(
                self._watch_policies(config.watch_policies_seconds)
            )
        self.runtime_file.publish(self.runtime_info())
        log.info(
            "guardproxy.started",
            proxy=f"127.0.0.1:{self.proxy.port}",
            control=f"{control_host}:{self.control.port}",
            policies=str(config.policies),
            shipped_bundle=is_shipped_bundle(config.policies),
            bundle=self.bundle.digest,
            rules=len(self.bundle.rules),
        )

    async def _listen(self) -> None:
        """Open the control API, the metrics port and the proxy; StartError naming the
        listener, the port and the flag if one cannot listen."""
        assert self.control is not None and self.proxy is not None
        found = {listener.what: listener for listener in listeners(self.config)}
        servers: list[tuple[str, Any]] = [("the control API", self.control)]
        if self.ops_server is not None:
            servers.append(("the metrics port", self.ops_server))
        if self.chat is not None:
            servers.append(("the chat callback", self.chat))
        for what, server in servers:
            try:
                await server.start()
            except OSError as error:
                raise StartError(describe(found[what], error)) from error
        try:
            await self.proxy.start()
        except ProxyStartError as error:
            # mitmproxy does not say why: bind its addresses the same way to find out
            for listener in listeners(self.config):
                if listener.what in ("the proxy", "a reverse listener"):
                    problem = bind_problem(listener)
                    if problem is not None:
                        raise StartError(describe(listener, problem)) from error
            raise StartError(
                f"{error}; mitmproxy gave no reason (see the log above); check --listen "
                "and --reverse"
            ) from error
        except OSError as error:
            raise StartError(f"cannot start the proxy: {os_reason(error)}") from error

    def _oncall_setup(self, config: ProxyConfig) -> None:
        """Schedules, pagers and Slack's secrets, read before anything is opened: a
        missing secret or a schedule that cannot work stops start-up in one line."""
        try:
            if config.oncall.configured():
                self.schedules = build_schedules(
                    config.oncall, transport=lambda: self._api_transport
                )
                self._pagers = build_pagers(config.oncall, self._api_transport)
            if config.slack is not None:
                slack = config.slack
                self._slack_secrets = (
                    read_secret(slack.bot_token_file, slack.bot_token_env, "slack bot token"),
                    read_secret(
                        slack.signing_secret_file, slack.signing_secret_env, "slack signing secret"
                    ),
                )
        except (OnCallConfigError, SecretError) as error:
            raise StartError(str(error)) from error

    def _check_schedules(self, bundle: Bundle) -> list[str]:
        """The bundle's on-call groups and pages that this configuration cannot serve."""
        return schedule_problems(bundle, self.schedules, lambda name: name in self._pagers)

    def _chat_setup(self, config: ProxyConfig, store: Store, approvals: ApprovalService) -> None:
        if self.schedules is not None:
            self.paging = Paging(
                store, self.schedules, self._pagers, clock=self._clock,
                console_url=self.console_url, max_attempts=config.oncall.max_attempts,
            )  # fmt: skip
        if config.slack is None or self._slack_secrets is None or config.chat_listen is None:
            return
        token, signing_secret = self._slack_secrets
        api = SlackApi(
            api=config.slack.api_url, token=token, transport=self._api_transport,
            timeout=config.slack.timeout_seconds, max_attempts=config.slack.max_attempts,
        )  # fmt: skip
        self.slack = SlackChat(
            api, config.slack.channel, store, approvals, console_url=self.console_url
        )
        interactions = SlackInteractions(
            signing_secret=signing_secret, store=store, approvals=approvals, api=api,
            clock=self._clock,
        )  # fmt: skip
        self.chat = ChatServer(interactions, *split_host_port(config.chat_listen))

    def console_url(self) -> str:
        """Where approvers open the console (links in notifications)."""
        if self.config.console_url:
            return self.config.console_url
        port = self.control.port if self.control is not None else 0
        return f"http://127.0.0.1:{port}/console"

    def _hold_facts(self, hold_id: str) -> HoldFacts | None:
        return hold_facts(self._store, hold_id) if self._store is not None else None

    def _protected(self) -> set[tuple[str, int]]:
        """Addresses guarded sessions must never reach: the control API and the proxy."""
        ports: set[int] = set()
        hosts = {"127.0.0.1"}
        if self.control is not None:
            ports.add(self.control.port)
        if self.ops_server is not None:
            ports.add(self.ops_server.port)
        if self.chat is not None:
            ports.add(self.chat.port)
        if self.proxy is not None:
            ports.update(port for _, port in self.proxy.listen_addresses())
        listening = [
            self.config.control, self.config.listen, self.config.metrics_listen,
            self.config.chat_listen,
        ]  # fmt: skip
        for address in filter(None, listening):
            if not is_loopback(address):  # in a container: its own names and addresses too
                hosts.update(own_addresses(split_host_port(address)[0]))
        return {(host, port) for host in hosts for port in ports}

    def _record_status(self, decision_id: str, status: int) -> None:
        if self.gate is not None:
            self.gate.record_status(decision_id, status)

    async def reload_tls(self) -> None:
        """Trust the CAs a newly attached session brought (on the proxy's own loop)."""
        if self.proxy is not None:
            self.proxy.reload_upstream_trust()

    # -- operations: readiness, metrics, reload

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Policies loaded, the store answering a real query, the proxy listening."""
        checks: dict[str, Any] = {}
        gate = self.gate
        checks["policies"] = (
            {"ok": True, "bundle": gate.bundle.digest, "rules": len(gate.bundle.rules)}
            if gate is not None
            else {"ok": False, "error": "no policy bundle loaded"}
        )
        store = self._store
        if store is None:
            checks["store"] = {"ok": False, "error": "the store is not open"}
        else:
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(store.list_holds, state=HoldState.PENDING, limit=1),
                    READY_QUERY_TIMEOUT,
                )
                checks["store"] = {"ok": True}
            except (StoreError, TimeoutError) as error:
                self.metrics.store_error("readiness")
                checks["store"] = {"ok": False, "error": str(error) or "query timed out"}
        addresses = self.proxy.listen_addresses() if self.proxy is not None else []
        checks["proxy"] = (
            {"ok": True, "listening": [f"{h}:{p}" for h, p in addresses]}
            if addresses
            else {"ok": False, "error": "the proxy is not listening"}
        )
        return all(check["ok"] for check in checks.values()), checks

    async def metrics_page(self) -> bytes:
        store = self._store
        if store is not None:
            try:
                pending = await asyncio.to_thread(
                    store.list_holds, state=HoldState.PENDING, limit=10_000
                )
                self.metrics.set_pending(len(pending))
            except StoreError:
                self.metrics.store_error("count_pending")
        return self.metrics.exposition()

    async def reload_policies(self, source: str) -> ReloadReport:
        """Load and lint the bundle again; swap it in only if it has no errors."""
        async with self._reload_lock:
            gate = self.gate
            if gate is None:
                raise StartError("guardproxy is not started")
            bundle, report = await asyncio.to_thread(
                reload_bundle, self.config.policies, gate.bundle, source
            )
            problems = self._check_schedules(bundle) if report.result == "loaded" else []
            if problems:  # holds nobody could approve or page: keep the bundle in force
                current = gate.bundle
                bundle, report = current, replace(
                    report, result="refused", digest=current.digest, previous=current.digest,
                    rules=len(current.rules), errors=tuple(problems), added=(), removed=(),
                )  # fmt: skip
            if report.result == "loaded":
                gate.swap_bundle(bundle)
                self._bundle = bundle
                self.runtime_file.update(self.runtime_info())
                log.info("policy.reloaded", source=source, bundle=report.digest,
                         previous=report.previous, rules=report.rules,
                         previous_rules=report.previous_rules, added=list(report.added),
                         removed=list(report.removed))  # fmt: skip
                if report.removed:
                    log.warning("policy.rules_removed", source=source, count=len(report.removed),
                                rules=list(report.removed))  # fmt: skip
            elif report.result == "refused":
                log.error("policy.reload_refused", source=source, kept=report.digest,
                          errors=list(report.errors))  # fmt: skip
            self.metrics.policy_reload(report.result)
            return report

    async def _watch_policies(self, interval: float) -> None:
        """Reload when the bundle's files change (mtime or size), polled."""
        path = self.config.policies
        seen = await asyncio.to_thread(bundle_fingerprint, path)
        while True:
            await asyncio.sleep(interval)
            current = await asyncio.to_thread(bundle_fingerprint, path)
            if current != seen:
                seen = current
                await self.reload_policies("watch")

    def runtime_info(self) -> dict[str, Any]:
        assert self.proxy is not None and self.control is not None
        return {
            "pid": os.getpid(),
            "instance": self.runtime_file.instance,
            "proxy": f"{reachable_host(self.config.listen)}:{self.proxy.port}",
            "control": f"http://{reachable_host(self.config.control)}:{self.control.port}",
            "ca_cert": str(self.proxy.ca_cert),
            "policies": str(self.config.policies),
            "bundle": self.bundle.digest,
            "console": self.console_url(),
        }

    async def _open(self, config: ProxyConfig) -> tuple[Bundle, Store]:
        """The CA, the policies, the recognisers' models and the store."""
        try:
            ensure_ca(config.ca_dir)
        except OSError as error:
            raise StartError(
                f"cannot set up the CA in {config.ca_dir}: {os_reason(error)}; make it a "
                "directory you can write, or choose another data directory with --data-dir DIR"
            ) from error
        bundle = load_policies(config.policies)
        problems = self._check_schedules(bundle)
        if problems:
            more = f" ({len(problems)} problems; the first)" if len(problems) > 1 else ""
            raise StartError(f"the policy bundle {config.policies}{more}: {problems[0]}")
        if config.shadow_policies is not None:
            self._shadow_bundle = load_policies(config.shadow_policies)
        # the AWS model index: milliseconds from its cache, seconds to build it once
        await asyncio.to_thread(warm_up)
        try:
            store = await asyncio.to_thread(open_store, config.store_url, writer="proxy")
            if isinstance(store, SqliteStore):  # no checkpoint's disk sync on the request path
                store.checkpoint_in_background()
            return bundle, store
        except StoreError as error:
            where = redact_url(config.store_url)  # a PostgreSQL URL may carry a password
            raise StartError(
                f"cannot open the store {where}: {one_line(error)}; check --store "
                "($GUARDPROXY_STORE)"
            ) from error

    def _decision_writer(self, store_url: str) -> Writer:
        """Read records are redacted, chained and written by a process of their own."""
        return ProcessWriter(store_url, on_error=self.metrics.store_error)

    async def stop(self) -> None:
        """Stop accepting connections, answer live held requests (their holds stay
        pending), write queued records, close the store."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
        if self.notifications is not None:
            await self.notifications.stop()
            self.notifications = None
        if self.paging is not None:
            await self.paging.stop()
            self.paging = None
        if self.slack is not None:
            await self.slack.stop()
            self.slack = None
        if self.chat is not None:
            await self.chat.stop()
            self.chat = None
        self._api_transport.close()
        for task in (self._sweeper, self._checkpoints):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._sweeper = self._checkpoints = None
        if self.proxy is not None:
            await self.proxy.stop(drain=SHUTDOWN_DRAIN_SECONDS)
        if self.control is not None:
            await self.control.stop()
        if self.ops_server is not None:
            await self.ops_server.stop()
        if self.gate is not None:
            await asyncio.to_thread(self.gate.flush)
            self.gate = None
        if self.history is not None:
            await asyncio.to_thread(self.history.flush)
            self.history = None
        if self.impact is not None:
            await asyncio.to_thread(self.impact.close)  # previews are bounded in time
            self.impact = None
        if self._checkpointer is not None:  # after the last records were written
            await asyncio.to_thread(self._checkpointer.final)
            self._checkpointer = None
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
            self._store = None
        self.runtime_file.withdraw()
        log.info("guardproxy.stopped")


class BackgroundGuardproxy:
    """A guardproxy on its own event loop in a background thread.

    For callers that are not asyncio programs: `guardproxy run`, which supervises a
    child process meanwhile, and tests that drive real clients against it.
    """

    def __init__(
        self, config: ProxyConfig, *, clock: Clock = utc_now, take_over_runtime: bool = True
    ) -> None:
        self.service = Guardproxy(config, clock=clock, take_over_runtime=take_over_runtime)
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

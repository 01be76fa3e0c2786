"""mitmproxy embedded in our own asyncio program.

A plain ``Master`` with only the addons we need (not DumpMaster, whose ErrorCheck
calls sys.exit inside a host program), listening on loopback only, with its CA in
guardproxy's data directory. Stopping really closes the listening sockets, which
``Master.shutdown()`` alone does not do in mitmproxy 12.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import certifi
import structlog
from mitmproxy import options
from mitmproxy.addons import (
    core,
    disable_h2c,
    next_layer,
    proxyserver,
    tlsconfig,
    upstream_auth,
)
from mitmproxy.certs import CertStore
from mitmproxy.master import Master

from guardproxy.broker import Broker
from guardproxy.config import ProxyConfig, split_host_port
from guardproxy.gate.gate import Gate
from guardproxy.intercept.addons import (
    BodyGuard,
    Guard,
    Passthrough,
    Ready,
    ResponseStreaming,
    SessionAuth,
)
from guardproxy.intercept.broker import BrokerAuth, BrokerSign
from guardproxy.intercept.failsafe import Failsafe
from guardproxy.intercept.sandboxnet import (
    SandboxClients,
    SandboxDestinations,
    SandboxDns,
    UpstreamAllow,
)
from guardproxy.namemap import ROOT_NETWORK, NameAddresses
from guardproxy.recognise.request import RecogniseSettings
from guardproxy.session.history import SessionHistory
from guardproxy.session.registry import SessionRegistry, session_info
from guardproxy.store.base import Session

log = structlog.get_logger(__name__)

_SANDBOX_MODES = ("regular", "transparent", "dns")

CA_CERT = "mitmproxy-ca-cert.pem"
CA_KEY = "mitmproxy-ca.pem"


class ProxyStartError(Exception):
    """The proxy could not listen (address in use, bad CA directory...)."""


def ensure_ca(ca_dir: Path) -> Path:
    """Create the CA (in a private directory: its key can intercept everything) if absent."""
    ca_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ca_dir, 0o700)
    CertStore.from_store(str(ca_dir), "mitmproxy", 2048)
    return ca_dir / CA_CERT


def _free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports free on ``host`` for TCP and UDP both (mitmproxy refuses
    two listeners on one ``host:0``)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
        if port not in ports:
            ports.append(port)
    return ports


def upstream_trust_bundle(config: ProxyConfig) -> Path | None:
    """certifi plus private CAs (configured, or learned from kubeconfigs): mitmproxy's
    ``ssl_verify_upstream_trusted_ca`` replaces certifi rather than adding to it.

    The file is named by its content: mitmproxy caches TLS settings per path, so a
    bundle rewritten in place would not be picked up.
    """
    extra = [*config.upstream_ca_files, *sorted(config.upstream_trust_dir.glob("*.pem"))]
    if not extra:
        return None
    parts = [Path(certifi.where()).read_text(encoding="ascii")]
    parts.extend(Path(p).read_text(encoding="ascii") for p in extra)
    text = "\n".join(parts)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    bundle = config.data_dir / f"upstream-ca-bundle-{digest}.pem"
    if not bundle.exists():
        bundle.write_text(text, encoding="ascii")
    return bundle


class GuardProxy:
    """The intercepting proxy: start() binds the listeners, stop() releases them."""

    def __init__(
        self,
        config: ProxyConfig,
        gate: Gate,
        registry: SessionRegistry,
        settings: RecogniseSettings,
        history: SessionHistory,
        *,
        record_status: Callable[[str, int], None],
        protected: Callable[[], set[tuple[str, int]]],
        clock: Callable[[], datetime],
        broker: Broker | None = None,
    ) -> None:
        self._config = config
        self._broker = broker
        self._gate = gate
        self._registry = registry
        self._settings = settings
        self._history = history
        self._record_status = record_status
        self._protected = protected
        self._clock = clock
        self._master: Master | None = None
        self._task: asyncio.Task[None] | None = None
        self.sandbox_clients = SandboxClients()
        self._sandbox_ports: list[int] = []

    def _modes(self) -> list[str]:
        host, port = split_host_port(self._config.listen)
        modes = [f"regular@{host}:{port}"]
        modes.extend(f"reverse:{r.upstream}@{host}:{r.port}" for r in self._config.reverse)
        sandbox = self._config.sandbox_network
        if sandbox is not None:  # root-mode enforced session: on the veth's host end
            if not self._sandbox_ports:
                self._sandbox_ports = _free_ports(sandbox.address, len(_SANDBOX_MODES))
            modes += [
                f"{kind}@{sandbox.address}:{port}"
                for kind, port in zip(_SANDBOX_MODES, self._sandbox_ports, strict=True)
            ]
        return modes

    async def start(self) -> None:
        config = self._config
        ensure_ca(config.ca_dir)
        config.client_certs_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(config.client_certs_dir, 0o700)
        opts = options.Options(confdir=str(config.ca_dir))
        master = Master(opts)
        ready = Ready()
        failsafe = Failsafe(self._settings, self._gate.metrics)  # an exception refuses the flow
        names = NameAddresses(ROOT_NETWORK)  # the sandbox's DNS (root mode)
        sandbox = (
            [SandboxDns(names, failsafe=failsafe), SandboxDestinations(names, failsafe=failsafe)]
            if config.sandbox_network is not None
            else []
        )
        master.addons.add(
            core.Core(),
            proxyserver.Proxyserver(),
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
            upstream_auth.UpstreamAuth(),
            disable_h2c.DisableH2C(),
            *sandbox,
            SessionAuth(
                self._registry,
                allow_anonymous=config.allow_anonymous,
                failsafe=failsafe,
                sandbox=self.sandbox_clients if config.sandbox_network is not None else None,
            ),
            Passthrough(config.passthrough_hosts, failsafe=failsafe),
            UpstreamAllow(config.upstream_allow, failsafe=failsafe),  # before any lookup
            BodyGuard(config.max_body_bytes, self._settings, failsafe=failsafe),
            *self._broker_auth(failsafe),
            Guard(
                self._gate,
                self._settings,
                self._history,
                protected=self._protected,
                clock=self._clock,
                failsafe=failsafe,
            ),
            *self._broker_sign(failsafe),
            ResponseStreaming(self._record_status, failsafe=failsafe),
            ready,
        )
        trust = upstream_trust_bundle(config)
        master.options.update(
            mode=self._modes(),
            # a held request must outlive mitmproxy's idle timeout, which also runs during holds
            tcp_timeout=max(config.tcp_timeout_seconds, int(config.hold_window_seconds) + 60),
            body_size_limit=str(2 * config.max_body_bytes),
            stream_large_bodies=None,
            connection_strategy="lazy",
            ssl_insecure=False,
            client_certs=str(config.client_certs_dir),
            **({"ssl_verify_upstream_trusted_ca": str(trust)} if trust else {}),
        )
        self._master = master
        self._task = asyncio.create_task(master.run())
        done, _ = await asyncio.wait(
            [self._task, asyncio.ensure_future(ready.event.wait())],
            return_when=asyncio.FIRST_COMPLETED,
            timeout=30,
        )
        if self._task in done or not self.listen_addresses():
            await self.stop()
            raise ProxyStartError(f"guardproxy could not listen on {', '.join(self._modes())}")
        log.info("proxy.listening", addresses=[f"{h}:{p}" for h, p in self.listen_addresses()])

    def _broker_auth(self, failsafe: Failsafe) -> list[BrokerAuth]:
        """Session credentials authenticated before the decision (none without a broker)."""
        if self._broker is None:
            return []
        return [BrokerAuth(self._broker, self._settings, clock=self._clock, failsafe=failsafe)]

    def _broker_sign(self, failsafe: Failsafe) -> list[BrokerSign]:
        """Approved requests authenticated upstream with the real credentials."""
        return [] if self._broker is None else [BrokerSign(self._settings, failsafe=failsafe)]

    def reload_upstream_trust(self) -> None:
        """Pick up CAs and client certificates a newly attached session brought."""
        trust = upstream_trust_bundle(self._config)
        if self._master is not None and trust is not None:
            self._master.options.update(ssl_verify_upstream_trusted_ca=str(trust))

    def listen_addresses(self) -> list[tuple[str, int]]:
        if self._master is None:
            return []
        server = self._master.addons.get("proxyserver")
        return [(a[0], a[1]) for a in server.listen_addrs()]

    def sandbox_ports(self) -> dict[str, int]:
        """Root mode: the ports of the listeners on the veth's host end, by kind
        (``regular``, ``transparent``, ``dns`` for TCP, ``dns/udp``)."""
        sandbox = self._config.sandbox_network
        if self._master is None or sandbox is None:
            return {}
        found: dict[str, int] = {}
        for instance in self._master.addons.get("proxyserver").servers:
            kind = instance.mode.type_name
            if kind not in _SANDBOX_MODES or instance.mode.custom_listen_host != sandbox.address:
                continue
            for server in getattr(instance, "_servers", []):
                if isinstance(server, asyncio.Server):
                    found.setdefault(kind, server.sockets[0].getsockname()[1])
                else:  # mitmproxy_rs's UDP server
                    found.setdefault(f"{kind}/udp", server.getsockname()[1])
        return found

    def bind_sandbox_client(self, address: str, session: Session) -> None:
        """Root mode: connections from ``address`` (the sandbox's) are ``session``'s."""
        self.sandbox_clients.bind(address, session_info(session))

    @property
    def port(self) -> int:
        addresses = self.listen_addresses()
        if not addresses:
            raise ProxyStartError("the proxy is not listening")
        return addresses[0][1]

    @property
    def ca_cert(self) -> Path:
        return self._config.ca_dir / CA_CERT

    async def stop(self, *, drain: float = 5.0) -> None:
        """Close the listening sockets, answer held requests (bounded by ``drain``
        seconds), then stop the master."""
        master, task = self._master, self._task
        if master is not None:
            await master.addons.get("proxyserver").servers.update([])
        self._gate.close()
        if master is None or task is None:
            return
        await self._gate.drain(drain)
        master.shutdown()
        try:
            await asyncio.wait_for(task, timeout=10)
        except TimeoutError:
            task.cancel()
        await master.addons.get("proxyserver").servers.update([])
        self._master = None
        self._task = None
        log.info("proxy.stopped")

"""The in-sandbox helper: ``python -m guardproxy.sandbox.helper CONFIG``.

bwrap starts it as root of the sandbox's own user namespace, in the sandbox's network
namespace (loopback only). It

1. routes every address to loopback and installs nftables rules in that namespace:
   every TCP connection is redirected to the capture listener, UDP other than the DNS
   stub is dropped, and only the helper's own sockets (marked) are exempt;
2. answers DNS on 127.0.0.1:53 with a per-name address in ``FAKE_NETWORK``;
3. listens for proxy-aware clients (``HTTP(S)_PROXY`` point here) and passes their
   bytes as they are to the guard over the session's unix socket (the bridge);
4. accepts every other TCP connection on the capture listener, reads its original
   destination (``SO_ORIGINAL_DST``), and sends ``CONNECT host:port`` with the session
   credential over the bridge; a loopback destination that something inside the
   sandbox listens on is connected to directly (the agent's own dev server);
5. starts the agent in a nested sandbox (bwrap): its own PID namespace (it cannot
   see or signal the helper), no capabilities, the seccomp filter, under the relay
   (relay.py) that passes on ``run``'s signals; then waits for it and exits with its
   exit code.

The helper is not the boundary: the network namespace has no interface but loopback
and the rules stay when the helper is gone, so if it dies the agent has no network.
It imports only the standard library (and mitmproxy's DNS codec on the first query),
so it starts fast.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from guardproxy.namemap import ROOTLESS_NETWORK, NameAddresses
from guardproxy.sandbox.settings import HelperConfig

FAKE_NETWORK = ROOTLESS_NETWORK
"""Addresses the DNS stub hands out, one per name; a connection to one is a connection
to that name."""
MARK = 0x4750
"""The helper's own sockets carry this mark; the nftables rules let them through."""
SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
CONNECT_ANSWER_LIMIT = 64 * 1024
CHUNK = 256 * 1024
DNS_TTL = 60


def nft_rules(proxy_port: int, capture_port: int) -> str:
    """The sandbox namespace's ruleset (nft syntax)."""
    own = f"{{ {proxy_port}, {capture_port} }}"
    return f"""
table inet guardproxy {{
    chain capture {{
        type nat hook output priority -100; policy accept;
        meta mark {MARK:#x} return
        ip daddr 127.0.0.1 tcp dport {own} return
        ip6 daddr ::1 tcp dport {own} return
        meta l4proto tcp redirect to :{capture_port}
    }}
    chain egress {{
        type filter hook output priority 0; policy accept;
        meta mark {MARK:#x} accept
        ip daddr 127.0.0.1 udp dport 53 accept
        ip daddr 127.0.0.0/8 accept
        ip6 daddr ::1 accept
        meta l4proto tcp accept
        drop
    }}
}}
"""


def configure_network(config: HelperConfig) -> None:
    """Route every address to loopback (so a connection to any address reaches the
    redirect) and install the rules. Any failure stops the sandbox: without the rules,
    the agent would get no capture."""
    commands = [
        [config.ip, "route", "add", "default", "dev", "lo"],
        [config.ip, "-6", "route", "add", "default", "dev", "lo"],
    ]
    for argv in commands:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0 and "-6" not in argv:
            raise SystemExit(f"guardproxy sandbox: {' '.join(argv)}: {done.stderr.strip()}")
    done = subprocess.run(
        [config.nft, "-f", "-"],
        input=nft_rules(config.proxy_port, config.capture_port),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"guardproxy sandbox: nft: {done.stderr.strip()}")


# ---------------------------------------------------------------------------
# DNS


class DnsStub(asyncio.DatagramProtocol):
    """A/AAAA/others for any name: A gets the name's address, the rest nothing (so
    clients use IPv4, which is captured)."""

    def __init__(self, names: NameAddresses) -> None:
        self._names = names
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self._transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        answer = self.answer(data)
        if answer is not None and self._transport is not None:
            self._transport.sendto(answer, addr)

    def answer(self, data: bytes) -> bytes | None:
        from mitmproxy import dns  # noqa: PLC0415 - only when a query comes
        from mitmproxy.net.dns import classes, response_codes, types  # noqa: PLC0415

        try:
            query = dns.DNSMessage.unpack(data)
        except (ValueError, struct.error):
            return None
        if not query.query or len(query.questions) != 1:
            return query.fail(response_codes.FORMERR).packed if query.query else None
        question = query.questions[0]
        if question.type == types.PTR:
            return query.fail(response_codes.NXDOMAIN).packed
        answers = []
        if question.type == types.A and question.class_ == classes.IN:
            address = self._names.address(question.name)
            answers.append(dns.ResourceRecord.A(question.name, address, ttl=DNS_TTL))
        return query.succeed(answers).packed


# ---------------------------------------------------------------------------
# connections


async def _open_bridge(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(path, limit=CHUNK)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy both ways until both sides are done; then close both."""
    try:
        await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))
    finally:
        for writer in (a[1], b[1]):
            writer.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a reset: the client sees its connection refused, not a clean end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where the client connected before the redirect."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Helper:
    def __init__(self, config: HelperConfig) -> None:
        self.config = config
        self.names = NameAddresses(FAKE_NETWORK)
        self._credential = base64.b64encode(config.credential.encode()).decode()
        self._servers: list[asyncio.Server] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        for host in ("127.0.0.1", "::1"):
            with contextlib.suppress(OSError):  # ::1 when IPv6 is off
                self._servers.append(
                    await asyncio.start_server(self._proxied, host, config.proxy_port)
                )
                self._servers.append(
                    await asyncio.start_server(self._captured, host, config.capture_port)
                )
            with contextlib.suppress(OSError):
                await loop.create_datagram_endpoint(
                    lambda: DnsStub(self.names), local_addr=(host, 53)
                )

    async def _proxied(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A proxy-aware client: its bytes go to the guard's proxy as they are."""
        try:
            bridge = await _open_bridge(self.config.bridge)
        except OSError:
            _abort(writer)
            return
        await splice((reader, writer), bridge)

    async def _captured(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            host, port = original_destination(sock)
        except OSError:
            _abort(writer)
            return
        address = ipaddress.ip_address(host)
        if port in (self.config.proxy_port, self.config.capture_port) and (
            address.is_loopback or address.is_unspecified
        ):
            _abort(writer)  # a connection straight to a listener of the helper
            return
        target = self.names.name(host) if address in FAKE_NETWORK else None
        if target is None:
            target = host
            if address.is_loopback or address.is_unspecified:
                local = await self._local(host, port)
                if local is not None:  # something in the sandbox listens there
                    await splice((reader, writer), local)
                    return
                if address.is_unspecified:
                    target = "127.0.0.1" if address.version == 4 else "::1"
        await self._through_guard(reader, writer, target, port)

    async def _local(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except OSError:
            sock.close()
            return None
        return await asyncio.open_connection(sock=sock, limit=CHUNK)

    async def _through_guard(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
    ) -> None:
        authority = _authority(host, port)
        try:
            bridge_reader, bridge_writer = await _open_bridge(self.config.bridge)
            bridge_writer.write(
                f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
                f"Proxy-Authorization: Basic {self._credential}\r\n\r\n".encode()
            )
            await bridge_writer.drain()
            head = await bridge_reader.readuntil(b"\r\n\r\n")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            _abort(writer)
            return
        status = head.split(b" ", 2)[1:2]
        if status != [b"200"]:
            bridge_writer.close()
            _abort(writer)
            return
        await splice((reader, writer), (bridge_reader, bridge_writer))


# ---------------------------------------------------------------------------
# the agent


def agent_command(config: HelperConfig, seccomp_fd: int) -> list[str]:
    """The nested sandbox: a PID namespace of its own (the helper is not visible),
    no capabilities, the seccomp filter; the same filesystem and network namespace.
    The agent runs under the relay, which passes on the signals ``run`` receives."""
    relay = [*config.relay, str(config.signal_fd), "--"] if config.signal_fd >= 0 else []
    covers = [arg for path in config.covered for arg in ("--ro-bind", "/dev/null", path)]
    return [
        config.bwrap,
        "--unshare-user",
        "--uid", str(config.uid),
        "--gid", str(config.gid),
        "--unshare-pid",
        "--dev-bind", "/", "/",
        "--proc", "/proc",
        *covers,
        "--cap-drop", "ALL",
        "--seccomp", str(seccomp_fd),
        "--",
        *relay,
        *config.command,
    ]  # fmt: skip


def run_agent(config: HelperConfig) -> int:
    """Start the nested sandbox and wait for it. A terminal's SIGINT and SIGQUIT reach
    the agent directly: the nested bubblewrap must ignore them (it would die of them),
    so they stay ignored here; ``run`` sends every other signal through the relay."""
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    seccomp_fd = os.open(config.seccomp, os.O_RDONLY)
    kept = (seccomp_fd, config.signal_fd) if config.signal_fd >= 0 else (seccomp_fd,)
    try:
        agent = subprocess.Popen(agent_command(config, seccomp_fd), pass_fds=kept)
    finally:
        os.close(seccomp_fd)
        if config.signal_fd >= 0:
            os.close(config.signal_fd)
    code = agent.wait()
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m guardproxy.sandbox.helper CONFIG", file=sys.stderr)
        return 2
    config = HelperConfig.load(Path(argv[0]))
    if config.configure_network:
        configure_network(config)
    loop = asyncio.new_event_loop()
    helper = Helper(config)
    loop.run_until_complete(helper.start())
    # the event loop serves connections in a thread; the main thread waits for the agent
    import threading  # noqa: PLC0415

    threading.Thread(target=loop.run_forever, name="sandbox-helper", daemon=True).start()
    return run_agent(config)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Why a listener cannot start, said in one line: which port, whose it is, which flag moves it.

guardproxy opens up to four kinds of listening socket (the proxy, reverse listeners,
the control API, the metrics port). When one cannot be opened the operator needs to
know which of them failed, why (the port is taken, the address is not this machine's,
the port is privileged) and the flag that changes it. mitmproxy reports a failed
listener without its reason, so :func:`bind_problem` binds the same address the way
the servers do (``SO_REUSEADDR``, every address ``getaddrinfo`` gives) to find it.
On Linux, :func:`port_holder` names the process that holds a port, when it can see it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Listener", "bind_problem", "clashes", "describe", "port_holder"]


@dataclass(frozen=True)
class Listener:
    """One address guardproxy listens on: what it is for and the flag that sets it."""

    what: str  # "the proxy", "the control API", ...
    host: str
    port: int
    flag: str  # "--listen HOST:PORT", ...

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def bind_problem(listener: Listener) -> OSError | None:
    """The error binding ``listener``'s address gives now, or None if it can be bound."""
    try:
        infos = socket.getaddrinfo(
            listener.host or None,
            listener.port,
            socket.AF_UNSPEC,
            socket.SOCK_STREAM,
            0,
            socket.AI_PASSIVE,
        )
    except socket.gaierror as error:
        return error
    for family, kind, protocol, _, address in infos:
        try:
            probe = socket.socket(family, kind, protocol)
        except OSError:
            continue  # e.g. IPv6 disabled: the servers skip it too
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if (
                    error.errno == errno.EADDRNOTAVAIL
                    and family == socket.AF_INET6
                    and (len(infos) > 1)
                ):
                    continue  # `localhost` without IPv6: the servers skip ::1 too (tornado)
                return error
    return None


def clashes(listeners: list[Listener]) -> str | None:
    """A one-line problem when two listeners name the same fixed port on the same host."""
    seen: dict[tuple[str, int], Listener] = {}
    for listener in listeners:
        if listener.port == 0:
            continue
        key = (listener.host, listener.port)
        first = seen.get(key)
        if first is not None:
            return (
                f"{first.what} and {listener.what} are both set to listen on "
                f"{listener.address}; give one of them another port ({first.flag} or "
                f"{listener.flag})"
            )
        seen[key] = listener
    return None


def describe(listener: Listener, error: OSError | None) -> str:
    """One line: what could not listen, why, and what to do."""
    head = f"cannot start {listener.what} on {listener.address}"
    fix = f"with {listener.flag}"
    if isinstance(error, socket.gaierror):
        return (
            f"{head}: the host {listener.host!r} does not resolve ({error.strerror}); "
            f"give a local address {fix}"
        )
    code = error.errno if error is not None else None
    if code == errno.EADDRINUSE:
        holder = port_holder(listener.port)
        by = f" by {holder}" if holder else ""
        return (
            f"{head}: port {listener.port} is already in use{by}; stop that program, or "
            f"choose another port {fix} (port 0 picks a free one)"
        )
    if code == errno.EADDRNOTAVAIL:
        return f"{head}: {listener.host} is not an address of this machine; give one {fix}"
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"{head}: not allowed to listen on port {listener.port} (ports below 1024 need "
            f"privileges); choose a port from 1024 up {fix}"
        )
    reason = (error.strerror or str(error)) if error is not None else "no reason was given"
    return f"{head}: {reason}; check the address {fix}"


def port_holder(port: int) -> str:
    """``pid N (command)`` of a process listening on TCP ``port``, or "" if not visible.

    Linux only, best effort: the socket's inode from /proc/net/tcp{,6}, then the process
    whose file descriptors include it (processes of other users are usually hidden).
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return ""
    proc = Path("/proc")
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                target = os.readlink(descriptor)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return f"pid {entry.name} ({_command(entry)})"
    return ""


_LISTEN_STATE = "0A"


def _listening_inodes(port: int) -> set[str]:
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN_STATE:
                continue
            local_port = fields[1].rpartition(":")[2]
            if int(local_port, 16) == port:
                found.add(fields[9])
    return found


_INTERPRETERS = ("python", "node", "ruby", "perl", "java", "sh", "bash")


def _command(process: Path) -> str:
    """The program's name (the script's, for an interpreter): never its arguments,
    which may carry secrets."""
    try:
        raw = (process / "cmdline").read_bytes()
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    if not words:
        return "?"
    name = Path(words[0]).name
    if name.startswith(_INTERPRETERS):
        rest = iter(words[1:])
        for word in rest:
            if word == "-c":
                break
            if word == "-m":
                return f"{name} -m {next(rest, '?')}"
            if not word.startswith("-"):
                return f"{name} {Path(word).name}"
    return name

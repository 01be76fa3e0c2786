"""What every kind of ``guardproxy run`` (and ``guardproxy env``) shares: registering the
session, its files and environment (``prepare_session``), the banner, the paths an
enforced session must not see, and launching the command, as it is or in the rootless
sandbox, with signals passed on.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from guardproxy.broker import Broker, CredentialError
from guardproxy.broker.session_files import session_credentials
from guardproxy.cli.enforce import (
    signal_pipe,
    supervise_sandbox,
)
from guardproxy.control.client import DEFAULT_DATA_DIR
from guardproxy.gate.gate import utc_now
from guardproxy.sandbox import (
    SandboxSpec,
    Tools,
    guardproxy_code,
    inner_proxy_url,
    running_sandbox,
    sandbox_environment,
)
from guardproxy.session.environment import (
    kubeconfig_sources,
    proxy_url,
    rewrite_kubeconfig,
    session_environment,
    write_ca_bundle,
)
from guardproxy.session.registry import SessionCredential, SessionRefused, SessionRegistry
from guardproxy.store.base import Session

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class SessionError(Exception):
    """The session could not be set up; the message says why."""


@dataclass
class PreparedSession:
    environment: dict[str, str]
    session_id: str
    proxy_address: str
    control_url: str
    token: str = ""
    removed: list[str] = field(default_factory=list)
    """Variables of yours the session does not get (real credentials the guard brokers)."""
    hidden: list[Path] = field(default_factory=list)
    """Real credential files an enforced session must not see."""
    brokered: list[str] = field(default_factory=list)
    visible: list[str] = field(default_factory=list)


def session_body(
    args: argparse.Namespace, command: list[str], user: str | None = None
) -> dict[str, Any]:
    """What registering the session says about it."""
    return {"name": args.name, "user": user or getpass.getuser(), "command": command,
            "cwd": os.getcwd(), "labels": args.label, "resume": args.resume}  # fmt: skip


def broker_offer(broker: Broker | None, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """What the session holds instead of the real credentials (the broker's offer), its
    kubeconfig files (``body["kubeconfig"]``) read in; empty without a broker.
    SessionError in one line when they cannot be brokered."""
    if broker is None:
        return {}
    try:
        sources = [Path(p) for p in body.get("kubeconfig") or []]
        return broker.register_session(session_id, sources)
    except (CredentialError, OSError, ValueError) as error:
        raise SessionError(f"the session's credentials cannot be brokered: {error}") from None


def register_session(
    registry: SessionRegistry, body: dict[str, Any]
) -> tuple[Session, SessionCredential]:
    """Create the session (or resume an ended one) in a guard's own registry."""
    if body["resume"]:
        try:
            return registry.resume(body["resume"], user=body["user"])
        except SessionRefused as refused:
            raise SessionError(f"{refused.error} ({refused.hint})") from None
    return registry.create(
        name=body["name"], user=body["user"], command=body["command"],
        cwd=body["cwd"], labels=body["labels"], now=utc_now(),
    )  # fmt: skip


def prepare_session(
    args: argparse.Namespace,
    data_dir: Path,
    register: Any,
    proxy_host: str,
    proxy_port: int,
    ca_cert: Path,
    command: list[str],
    *,
    sandbox_dir: Path | None = None,
    inner_proxy: tuple[str, int] | None = None,
    user: str | None = None,
) -> tuple[PreparedSession, list[Path]]:
    """Create the session and its files; return its environment and new upstream CAs.

    ``sandbox_dir``: an enforced session's run directory: its files go there (the data
    directory is hidden inside the sandbox) and its proxy is the in-sandbox listener,
    or ``inner_proxy`` (root mode: the guard's listener on the veth pair).
    """
    base = dict(os.environ)
    body = session_body(args, command, user)
    body["kubeconfig"] = [str(p) for p in kubeconfig_sources(base)]
    created = register(body)
    session_id, token = created["id"], created["token"]
    offer: dict[str, Any] = created.get("broker") or {}
    url = proxy_url(proxy_host, proxy_port, session_id, token)
    session_dir = data_dir / "sessions" / session_id
    if sandbox_dir is None:
        session_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(session_dir, 0o700)
    else:
        url = (
            proxy_url(*inner_proxy, session_id, token)
            if inner_proxy is not None
            else inner_proxy_url(session_id, token)
        )
        session_dir = sandbox_dir
        shutil.copyfile(ca_cert, sandbox_dir / "ca-cert.pem")  # the certificate, not the key
        ca_cert = sandbox_dir / "ca-cert.pem"
    bundle = write_ca_bundle(ca_cert, session_dir / "ca-bundle.pem", base)
    kube = rewrite_kubeconfig(
        base,
        session_dir,
        proxy=url,
        ca_cert=ca_cert,
        upstream_ca_dir=data_dir / "upstream-trust",
        session_tokens=(offer.get("kubernetes") or {}).get("users") or {},
    )
    credentials = session_credentials(offer, base, session_dir, enforced=sandbox_dir is not None)
    environment = session_environment(
        proxy=url,
        ca_bundle=bundle,
        ca_cert=ca_cert,
        kubeconfig=kube.path if kube else None,
        session_id=session_id,
    )
    environment.update(credentials.environment)
    new_cas = kube.upstream_cas if kube else []
    prepared = PreparedSession(environment, session_id, f"{proxy_host}:{proxy_port}", "", token,
                         credentials.removed, credentials.hidden, credentials.brokered,
                         credentials.visible)  # fmt: skip
    return prepared, new_cas


@dataclass
class Sandbox:
    """An enforced session's tools and run directory (outside the data directory)."""

    tools: Tools
    run_dir: Path
    allow_unix_sockets: bool = False


def store_files(store_url: str) -> list[Path]:
    """A SQLite store's files (hidden in the sandbox when outside the data directory)."""
    prefix = "sqlite:///"
    if not store_url.startswith(prefix):
        return []
    database = Path(unquote(urlsplit(store_url).path))  # without ?synchronous=...
    return [database, Path(f"{database}-wal"), Path(f"{database}-shm"), Path(f"{database}-journal")]


def guard_paths(data_dir: Path) -> list[Path]:
    """Every place guardproxy keeps secrets on this machine: the sandbox hides them."""
    found = [data_dir, DEFAULT_DATA_DIR]
    if os.environ.get("GUARDPROXY_DATA_DIR"):
        found.append(Path(os.environ["GUARDPROXY_DATA_DIR"]))
    return found


def launch_session(
    prepared: PreparedSession,
    command: list[str],
    sandbox: Sandbox | None,
    *,
    hidden: list[Path],
    read_only: list[Path],
    proxy: tuple[str, int],
) -> int:
    """Run the command: as it is (cooperative), or in the sandbox (enforced)."""
    if sandbox is None:
        return _supervise(command, prepared.environment, removed=prepared.removed)
    hidden = [*hidden, *prepared.hidden]
    spec = SandboxSpec(
        tools=sandbox.tools,
        run_dir=sandbox.run_dir,
        command=command,
        session_id=prepared.session_id,
        token=prepared.token,
        proxy_host=proxy[0],
        proxy_port=proxy[1],
        hidden=hidden,
        read_only=[*read_only, *guardproxy_code()],
        allow_unix_sockets=sandbox.allow_unix_sockets,
    )
    session_env = {**prepared.environment, "GUARDPROXY_ENFORCED": "1"}
    yours = {k: v for k, v in os.environ.items() if k not in prepared.removed}
    environment = sandbox_environment(yours, session_env, hidden)
    with signal_pipe() as pipe, running_sandbox(spec, pipe.read_fd) as launch:
        return supervise_sandbox(launch, environment, pipe)


def print_banner(
    prepared: PreparedSession,
    control_url: str,
    finding: str,
    *,
    resumed: bool,
    enforced: bool = False,
    root: str = "",
) -> None:
    """``finding``: the options `holds` and `approve` need to reach this guard.
    ``root``: root mode, whose guard runs as this user."""
    how = "resumed and " if resumed else ""
    if root:
        how += (
            f"sandboxed (--enforce, root mode: its only link leads to the guard, which runs "
            f"as {root}) and "
        )
    elif enforced:
        how += "sandboxed (--enforce: no way out but the guard) and "
    print(
        f"guardproxy: session {prepared.session_id} is {how}guarded by {prepared.proxy_address} "
        f"(control {control_url}). Held actions: `guardproxy holds{finding}`; approve one with "
        f"`guardproxy approve HOLD_ID --reason TEXT{finding}`; an approved request passes when "
        f"retried here, in a new run from this directory, or with --resume {prepared.session_id}.",
        file=sys.stderr,
    )
    brokered = "; ".join(prepared.brokered) or "none"
    visible = "; ".join(prepared.visible) or "none"
    print(
        f"guardproxy: credentials brokered by the guard (the session holds stand-ins valid only "
        f"there): {brokered}. Real credentials left visible to the agent: {visible}.",
        file=sys.stderr,
    )


def _supervise(
    command: list[str],
    session_env: dict[str, str],
    *,
    inherit: bool = True,
    removed: list[str] | None = None,
) -> int:
    """Run the command with the session environment (added to this process's, less
    ``removed``, unless ``inherit`` is False); pass signals; return its exit code."""
    mine = {k: v for k, v in os.environ.items() if k not in (removed or [])}
    environment = {**mine, **session_env} if inherit else dict(session_env)
    try:
        child = subprocess.Popen(command, env=environment)
    except OSError as error:
        raise SessionError(f"cannot run {command[0]}: {error.strerror}") from None
    previous = {sig: signal.getsignal(sig) for sig in (*FORWARDED_SIGNALS, signal.SIGINT)}

    def forward(sig: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(sig)

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    # Ctrl-C reaches the child from the terminal already; don't deliver it twice.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code

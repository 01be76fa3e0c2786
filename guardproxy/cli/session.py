"""``guardproxy run`` and ``guardproxy env``: put an agent session behind the guard."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from guardproxy.broker import CredentialError
from guardproxy.broker.session_files import session_credentials
from guardproxy.cli.enforce import (
    EnforceError,
    GuardChild,
    signal_pipe,
    supervise_sandbox,
)
from guardproxy.cli.serve import ConfigError, add_proxy_options, build_config
from guardproxy.config import ProxyConfig, SandboxNetwork
from guardproxy.control.client import DEFAULT_DATA_DIR, ControlClient, ControlError
from guardproxy.gate.gate import utc_now
from guardproxy.intercept.proxy import ensure_ca
from guardproxy.sandbox import (
    EnforceUnavailable,
    SandboxSpec,
    Tools,
    create_run_dir,
    guardproxy_code,
    inner_proxy_url,
    preflight,
    running_sandbox,
    sandbox_environment,
)
from guardproxy.sandbox.account import (
    DEFAULT_GUARD_USER,
    ROOT_DATA_DIR,
    Account,
    agent_account,
    check_reachable,
    guard_account,
    hand_over,
    python_paths,
)
from guardproxy.sandbox.launch import running_root_sandbox
from guardproxy.sandbox.network import CapturePorts, SessionNetwork
from guardproxy.sandbox.preflight import MODES, enforce_mode, root_preflight
from guardproxy.server import BackgroundGuardproxy, StartError
from guardproxy.session.environment import (
    export_lines,
    kubeconfig_sources,
    proxy_url,
    rewrite_kubeconfig,
    self_contained_kubeconfig,
    session_environment,
    write_ca_bundle,
)
from guardproxy.session.registry import SessionCredential, SessionRefused, SessionRegistry
from guardproxy.store.base import Session

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class SessionError(Exception):
    """The session could not be set up; the message says why."""


def add_commands(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run", help="run a command (an agent) with all its traffic through the guard"
    )
    add_proxy_options(run)
    _session_options(run)
    run.add_argument(
        "--enforce",
        action="store_true",
        help="run the command in a sandbox whose only way out is the guard (bubblewrap, "
        "user namespaces): proxy variables cannot be bypassed, guardproxy's data is hidden",
    )
    run.add_argument(
        "--enforce-mode",
        choices=MODES,
        default="auto",
        help="root: the guard runs as its own user and the sandbox's only link is a veth pair "
        "into the guard's transparent proxy (needs root); rootless: bubblewrap's namespaces "
        "only; auto (default): root when run as root without --proxy",
    )
    run.add_argument(
        "--allow-unix-sockets",
        action="store_true",
        help="let the sandboxed command use unix sockets (terraform talks to its providers "
        "over them); every unix socket this machine listens on when it starts stays out of "
        "its reach, one created later does not",
    )
    run.add_argument(
        "--guard-user",
        default=DEFAULT_GUARD_USER,
        metavar="USER",
        help=f"root mode: the user the guard runs as, created if missing ({DEFAULT_GUARD_USER})",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    run.set_defaults(handler=cmd_run)

    env = subparsers.add_parser(
        "env", help="print shell exports that put this shell's tools behind a running guard"
    )
    _session_options(env)
    env.add_argument("--data-dir", type=Path, metavar="DIR")
    env.set_defaults(handler=cmd_env)


def _session_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--proxy", metavar="URL", help="attach to a running guardproxy (default for run: start one)"
    )
    parser.add_argument("--control", metavar="URL", help="its control API (default: found)")
    parser.add_argument("--token", help="control API token (default: from the data directory)")
    parser.add_argument("--name", default="", help="a name for the session")
    parser.add_argument("--label", action="append", default=[], help="session label")  # fmt: skip
    parser.add_argument(
        "--resume",
        metavar="SESSION",
        default="",
        help="continue an ended session of yours (its approvals, holds and history apply)",
    )


SERVE_ONLY = {
    "policies": "--policies",
    "shadow_policies": "--shadow-policies",
    "config": "--config",
    "hold_window": "--hold-window",
    "passthrough": "--passthrough",
    "reverse": "--reverse",
    "env": "--env",
    "kube_host": "--kube-host",
    "upstream_ca": "--upstream-ca",
    "broker": "--broker",
    "upstream_allow": "--upstream-allow",
}
"""Options of the guard itself: an attached `run` (``--proxy``) cannot apply them."""


def _ignored_when_attached(args: argparse.Namespace) -> list[str]:
    return [flag for dest, flag in SERVE_ONLY.items() if getattr(args, dest, None)]


@dataclass
class _Prepared:
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


def _prepare(
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
) -> tuple[_Prepared, list[Path]]:
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
    prepared = _Prepared(environment, session_id, f"{proxy_host}:{proxy_port}", "", token,
                         credentials.removed, credentials.hidden, credentials.brokered,
                         credentials.visible)  # fmt: skip
    return prepared, new_cas


# ---------------------------------------------------------------------------
# run


def cmd_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("guardproxy: run needs a command: guardproxy run -- COMMAND [ARGS...]",
              file=sys.stderr)  # fmt: skip
        return 2
    sandbox: _Sandbox | None = None
    try:
        if getattr(args, "enforce", False):
            if enforce_mode(args.enforce_mode, attached=bool(args.proxy)) == "root":
                plan = _root_plan_or_none(args)
                if plan is not None:
                    return _run_root(args, command, plan)
            sandbox = _Sandbox(preflight(), create_run_dir(), args.allow_unix_sockets)
        if args.proxy:
            return _run_attached(args, command, sandbox)
        return _run_embedded(args, command, sandbox)
    except (
        ConfigError, ControlError, SessionError, StartError, EnforceUnavailable, EnforceError
    ) as error:  # fmt: skip
        print(f"guardproxy: {error}", file=sys.stderr)
        return 2
    finally:
        if sandbox is not None:
            shutil.rmtree(sandbox.run_dir, ignore_errors=True)


def _root_plan_or_none(args: argparse.Namespace) -> _RootPlan | None:
    """Root mode's plan; with ``--enforce-mode auto``, None (rootless mode, said on
    stderr) when a precondition of root mode is missing, since nothing has changed yet.
    An explicit ``--enforce-mode root`` fails instead."""
    try:
        return _root_plan(args)
    except EnforceUnavailable as error:
        if args.enforce_mode != "auto":
            raise
        print(f"guardproxy: {error}; using rootless mode instead", file=sys.stderr)
        return None


@dataclass
class _Sandbox:
    """An enforced session's tools and run directory (outside the data directory)."""

    tools: Tools
    run_dir: Path
    allow_unix_sockets: bool = False


def _store_files(store_url: str) -> list[Path]:
    """A SQLite store's files (hidden in the sandbox when outside the data directory)."""
    prefix = "sqlite:///"
    if not store_url.startswith(prefix):
        return []
    database = Path(store_url[len(prefix) - 1 :])
    return [database, Path(f"{database}-wal"), Path(f"{database}-shm"), Path(f"{database}-journal")]


def _guard_paths(data_dir: Path) -> list[Path]:
    """Every place guardproxy keeps secrets on this machine: the sandbox hides them."""
    found = [data_dir, DEFAULT_DATA_DIR]
    if os.environ.get("GUARDPROXY_DATA_DIR"):
        found.append(Path(os.environ["GUARDPROXY_DATA_DIR"]))
    return found


def _launch(
    prepared: _Prepared,
    command: list[str],
    sandbox: _Sandbox | None,
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


def _run_embedded(args: argparse.Namespace, command: list[str], sandbox: _Sandbox | None) -> int:
    config = build_config(args, listen="127.0.0.1:0", control="127.0.0.1:0")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config.data_dir, 0o700)
    ca_cert = ensure_ca(config.ca_dir)
    # a `serve` already using this data directory keeps its runtime.json (holds, approve
    # and kill -HUP must keep finding it); this guard is then reached by its control URL
    embedded = BackgroundGuardproxy(config, take_over_runtime=False)
    sessions: dict[str, Any] = {}

    def register(body: dict[str, Any]) -> dict[str, Any]:
        registry = embedded.service.registry
        assert registry is not None
        session, credential = register_session(registry, body)
        sessions["id"] = session.id
        broker = embedded.service.broker
        offer: dict[str, Any] = {}
        if broker is not None:
            try:
                sources = [Path(p) for p in body["kubeconfig"]]
                offer = broker.register_session(session.id, sources)
            except (CredentialError, OSError, ValueError) as error:
                why = f"the session's credentials cannot be brokered: {error}"
                raise SessionError(why) from None
        return {"id": session.id, "token": credential.token, "broker": offer}

    embedded.start()
    try:
        service = embedded.service
        assert service.proxy is not None and service.control is not None
        prepared, new_cas = _prepare(
            args, config.data_dir, register, "127.0.0.1", service.proxy.port, ca_cert, command,
            sandbox_dir=sandbox.run_dir if sandbox else None,
        )  # fmt: skip
        if new_cas:
            embedded.call(service.reload_tls())
        control_url = f"http://127.0.0.1:{service.control.port}"
        if service.runtime_file.owned:
            finding = f" --data-dir {shlex.quote(str(config.data_dir))}"
        else:
            finding = f" --control {control_url}"
        _banner(prepared, control_url, finding, resumed=bool(args.resume),
                enforced=sandbox is not None)  # fmt: skip
        read_only = [config.policies, *([args.config] if args.config else [])]
        return _launch(
            prepared, command, sandbox,
            hidden=[*_guard_paths(config.data_dir), *_store_files(config.store_url)],
            read_only=read_only, proxy=("127.0.0.1", service.proxy.port),
        )  # fmt: skip
    finally:
        if "id" in sessions and embedded.service.registry is not None:
            embedded.service.registry.end(sessions["id"], utc_now())
        embedded.stop()


def _run_attached(args: argparse.Namespace, command: list[str], sandbox: _Sandbox | None) -> int:
    ignored = _ignored_when_attached(args)
    if ignored:
        print(
            f"guardproxy: warning: {', '.join(ignored)} configure the guard itself and are "
            f"ignored when attaching to one with --proxy; give them to `guardproxy serve`",
            file=sys.stderr,
        )
    prepared, attached = _attach(args, command, sandbox)
    finding = "".join(
        f" {flag} {shlex.quote(str(value))}"
        for flag, value in (("--control", args.control), ("--data-dir", args.data_dir))
        if value
    )
    _banner(prepared, prepared.control_url, finding, resumed=bool(args.resume),
            enforced=sandbox is not None)  # fmt: skip
    client = ControlClient.locate(url=args.control, token=args.token, data_dir=args.data_dir)
    try:
        return _launch(
            prepared, command, sandbox, hidden=_guard_paths(attached.data_dir),
            read_only=attached.policies, proxy=attached.proxy,
        )  # fmt: skip
    finally:
        try:
            client.call("POST", f"/v1/sessions/{prepared.session_id}/end", {})
        except ControlError as error:
            print(f"guardproxy: could not end the session: {error}", file=sys.stderr)


@dataclass
class _Attached:
    """Where the guard a session attached to keeps its data, policies and proxy."""

    data_dir: Path
    policies: list[Path]
    proxy: tuple[str, int]


def _attach(
    args: argparse.Namespace, command: list[str], sandbox: _Sandbox | None = None
) -> tuple[_Prepared, _Attached]:
    client = ControlClient.locate(url=args.control, token=args.token, data_dir=args.data_dir)
    data_dir = Path(args.data_dir or os.environ.get("GUARDPROXY_DATA_DIR") or DEFAULT_DATA_DIR)
    runtime = client.call("GET", "/v1/runtime")
    ca_cert = Path(runtime["ca_cert"])
    if args.proxy:
        split = urlsplit(args.proxy if "//" in args.proxy else f"http://{args.proxy}")
        host, port = split.hostname or "127.0.0.1", split.port or 8080
    else:
        host, _, port_text = str(runtime["proxy"]).rpartition(":")
        port = int(port_text)

    def register(body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = client.call("POST", "/v1/sessions", body)
        return result

    prepared, new_cas = _prepare(
        args, data_dir, register, host, port, ca_cert, command,
        sandbox_dir=sandbox.run_dir if sandbox else None,
    )  # fmt: skip
    if new_cas:
        client.call("POST", "/v1/tls/reload", {})
    prepared.control_url = client.url
    policies = [Path(runtime["policies"])] if runtime.get("policies") else []
    return prepared, _Attached(data_dir, policies, (host, port))


def _banner(
    prepared: _Prepared,
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


# ---------------------------------------------------------------------------
# run --enforce, root mode


@dataclass(frozen=True)
class _RootPlan:
    """What root mode found it can use, before it changes anything."""

    agent: Account
    guard: Account
    tools: Tools
    config: ProxyConfig


def _root_plan(args: argparse.Namespace) -> _RootPlan:
    """Root mode's preconditions (EnforceUnavailable, one line, when one is missing):
    capabilities and tools, a guard user that can read the Python, the data and the
    policies, an agent user that can read the Python."""
    agent = agent_account()
    tools = root_preflight(agent_is_root=agent.uid == 0)
    config = build_config(args, listen="127.0.0.1:0", control="127.0.0.1:0")
    if config.data_dir == Path(DEFAULT_DATA_DIR) and args.data_dir is None:
        # root's home, which the guard cannot enter
        config = config.model_copy(update={"data_dir": ROOT_DATA_DIR})
    guard = guard_account(args.guard_user)
    fix = "install guardproxy, and keep its data and policies, where that user can read them"
    check_reachable(guard, {**python_paths(), "the data directory": config.data_dir,
                            "the policies": config.policies}, fix)  # fmt: skip
    if agent.uid != 0:
        check_reachable(agent, python_paths(), "install guardproxy where that user can read it")
    return _RootPlan(agent, guard, tools, config)


def _run_root(args: argparse.Namespace, command: list[str], plan: _RootPlan) -> int:
    """Root mode: the guard as its own user in a process of its own, the agent in a
    network namespace whose only link is a veth pair into the guard's transparent
    proxy (guardproxy/sandbox/network.py). Everything is removed at the end."""
    agent, guard, tools, config = plan.agent, plan.guard, plan.tools, plan.config
    hand_over(config.data_dir, guard)
    child = GuardChild(guard, config.data_dir)
    run_dir = create_run_dir(for_another_user=agent.uid != 0)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, run_dir, ignore_errors=True)
        signals = cleanup.enter_context(_interruptible())
        network = cleanup.enter_context(SessionNetwork(tools))
        try:
            assert network.slot is not None
            slot = network.slot
            sandbox_config = config.model_copy(update={"sandbox_network": SandboxNetwork(
                address=slot.host_address, client=slot.client_address)})  # fmt: skip
            body = session_body(args, command, user=agent.name if agent.uid else None)
            handed = _hand_kubeconfig(config.data_dir, guard)
            body["kubeconfig"] = [str(handed)] if handed else []
            try:
                report = child.start(sandbox_config.model_dump(mode="json"), body)
            finally:
                if handed:  # the guard holds what it needs in memory
                    handed.unlink(missing_ok=True)
            ports = report["ports"]
            network.capture(CapturePorts(
                proxy=ports["regular"], transparent=ports["transparent"], dns_tcp=ports["dns"],
                dns_udp=ports["dns/udp"],
            ))  # fmt: skip
            prepared, new_cas = _prepare(
                args, config.data_dir, lambda _body: report["session"], "127.0.0.1",
                report["proxy_port"], Path(report["ca_cert"]), command, sandbox_dir=run_dir,
                inner_proxy=(slot.host_address, ports["regular"]), user=body["user"],
            )  # fmt: skip
            hand_over(config.data_dir, guard)  # what the session's files put there
            if new_cas:
                child.reload_tls()
            control_url = f"http://127.0.0.1:{report['control_port']}"
            finding = (
                f" --data-dir {shlex.quote(str(config.data_dir))}"
                if report["runtime_owned"]
                else f" --control {control_url}"
            )
            _banner(prepared, control_url, finding, resumed=bool(args.resume), enforced=True,
                    root=guard.name)  # fmt: skip
            return _launch_root(args, config, prepared, command, agent, run_dir, network)
        finally:
            signals.hold()  # a signal now waits: the cleanup must finish
            child.stop()


def _hand_kubeconfig(data_dir: Path, guard: Account) -> Path | None:
    """The user's kubeconfig, self-contained, in a file only the guard can read: the
    guard runs as its own user and cannot read the user's files, yet must present the
    users' real credentials (client certificates, tokens) upstream. None when the user
    has no kubeconfig; SessionError when one of its files cannot be read."""
    sources = kubeconfig_sources(dict(os.environ))
    if not sources:
        return None
    try:
        merged = self_contained_kubeconfig(sources)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SessionError(f"cannot read your kubeconfig for the guard: {error}") from None
    handed = data_dir / f"handed-kubeconfig-{secrets.token_hex(8)}.yaml"
    descriptor = os.open(handed, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        yaml.safe_dump(merged, out, sort_keys=False)
    os.chown(handed, guard.uid, guard.gid)
    return handed


def _launch_root(
    args: argparse.Namespace,
    config: Any,
    prepared: _Prepared,
    command: list[str],
    agent: Account,
    run_dir: Path,
    network: SessionNetwork,
) -> int:
    assert network.slot is not None
    hidden = [*_guard_paths(config.data_dir), *_store_files(config.store_url)]
    read_only = [config.policies, *([args.config] if args.config else [])]
    spec = SandboxSpec(
        tools=network.tools,
        run_dir=run_dir,
        command=command,
        session_id=prepared.session_id,
        token=prepared.token,
        proxy_host=network.slot.host_address,
        proxy_port=0,
        hidden=hidden,
        read_only=[*read_only, *guardproxy_code()],
        nameserver=network.slot.host_address,
        agent_uid=agent.uid,
        agent_gid=agent.gid,
        allow_unix_sockets=args.allow_unix_sockets,
    )
    session_env = {**prepared.environment, "GUARDPROXY_ENFORCED": "1"}
    base = dict(os.environ)
    if agent.uid != 0 and agent.home:
        base.update(HOME=agent.home, USER=agent.name, LOGNAME=agent.name)
    environment = sandbox_environment(base, session_env, hidden)
    with (
        signal_pipe() as pipe,
        running_root_sandbox(spec, pipe.read_fd, network.netns_path) as launch,
    ):
        return supervise_sandbox(launch, environment, pipe, groups=agent.groups)


class _Interrupted(Exception):  # noqa: N818 - read as a sentence
    def __init__(self, sig: int) -> None:
        super().__init__(f"interrupted by signal {sig} while setting up; nothing was left behind")


class _Signals:
    """SIGTERM, SIGINT and SIGHUP while root mode sets up: they end it through its
    cleanup (their default action would leave the network and the guard behind); while
    it cleans up (``hold``): they wait."""

    WATCHED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.previous = {sig: signal.getsignal(sig) for sig in self.WATCHED}
        self.held: list[int] = []
        for sig in self.WATCHED:
            signal.signal(sig, self._interrupt)

    def _interrupt(self, sig: int, _frame: object) -> None:
        raise _Interrupted(sig)

    def _remember(self, sig: int, _frame: object) -> None:
        self.held.append(sig)

    def hold(self) -> None:
        for sig in self.WATCHED:
            signal.signal(sig, self._remember)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _interruptible() -> Iterator[_Signals]:
    signals = _Signals()
    try:
        yield signals
    except _Interrupted as interrupted:
        raise SessionError(str(interrupted)) from None
    finally:
        signals.restore()


# ---------------------------------------------------------------------------
# env


def cmd_env(args: argparse.Namespace) -> int:
    try:
        prepared, _ = _attach(args, [os.environ.get("SHELL", "sh")])
    except (ControlError, SessionError) as error:
        print(f"guardproxy: {error}", file=sys.stderr)
        return 2
    print(f"# guardproxy session {prepared.session_id} via {prepared.proxy_address}")
    print(export_lines(prepared.environment), end="")
    # real credentials the guard brokers leave this shell (its tools get the stand-ins)
    for name in sorted(set(prepared.removed) & set(os.environ) - set(prepared.environment)):
        print(f"unset {name}")
    return 0

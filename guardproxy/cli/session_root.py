"""``guardproxy run --enforce`` in root mode: the guard as its own user in a process of its
own, the agent in a network namespace whose only link is a veth pair into the guard's
transparent proxy; its preconditions, the kubeconfig handed to the guard, and signals
while it sets up and cleans up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from guardproxy.cli.enforce import (
    GuardChild,
    signal_pipe,
    supervise_sandbox,
)
from guardproxy.cli.serve import build_config
from guardproxy.cli.session_setup import (
    PreparedSession,
    SessionError,
    guard_paths,
    prepare_session,
    print_banner,
    session_body,
    store_files,
)
from guardproxy.config import ProxyConfig, SandboxNetwork
from guardproxy.control.client import DEFAULT_DATA_DIR
from guardproxy.sandbox import (
    EnforceUnavailable,
    SandboxSpec,
    Tools,
    create_run_dir,
    guardproxy_code,
    sandbox_environment,
)
from guardproxy.sandbox.account import (
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
from guardproxy.sandbox.preflight import root_preflight
from guardproxy.session.environment import (
    kubeconfig_sources,
    self_contained_kubeconfig,
)


def root_plan_or_none(args: argparse.Namespace) -> RootPlan | None:
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


@dataclass(frozen=True)
class RootPlan:
    """What root mode found it can use, before it changes anything."""

    agent: Account
    guard: Account
    tools: Tools
    config: ProxyConfig


def _root_plan(args: argparse.Namespace) -> RootPlan:
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
    return RootPlan(agent, guard, tools, config)


def run_root(args: argparse.Namespace, command: list[str], plan: RootPlan) -> int:
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
            prepared, new_cas = prepare_session(
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
            print_banner(prepared, control_url, finding, resumed=bool(args.resume), enforced=True,
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
    prepared: PreparedSession,
    command: list[str],
    agent: Account,
    run_dir: Path,
    network: SessionNetwork,
) -> int:
    assert network.slot is not None
    hidden = [*guard_paths(config.data_dir), *store_files(config.store_url)]
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

"""A real guardproxy between real clients and the e2e upstreams, and what it recorded.

``start_guard`` (a fixture in conftest.py, body :func:`guard_starter`) starts a
:class:`~guardproxy.server.BackgroundGuardproxy` with the shipped policy bundle, a
private data directory and a short hold window, and stops it at teardown.
:class:`Guard` gives tests what a human on call would use (the control API, the real
``guardproxy`` CLI) and what the store recorded (decisions and holds), so a test can
assert effects on both sides of the proxy.

:func:`guarded_run` runs a command under ``guardproxy run`` (its own embedded proxy),
the way a user wraps an agent session.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitmproxy.net.free_port import get_free_port

from guardproxy.config import ProxyConfig
from guardproxy.control.client import ControlClient
from guardproxy.gate.gate import utc_now
from guardproxy.server import BackgroundGuardproxy
from guardproxy.session.environment import proxy_url
from guardproxy.store import open_store

from .approvers import OnCall, add_approver

REPO_ROOT = Path(__file__).resolve().parents[2]
POLICIES = REPO_ROOT / "policies"
HOLD_ID = re.compile(r"\bh-[a-z0-9]{10}\b")
"""A hold id as the gate prints it in its messages (``h-`` + 10 base32 characters)."""

CLIENT_TIMEOUT = 90.0
"""Upper bound for one client invocation; a hang fails the test instead of the suite."""


def guardproxy_cli() -> list[str]:
    """The real ``guardproxy`` command of this virtualenv."""
    script = Path(sys.executable).with_name("guardproxy")
    return [str(script)] if script.exists() else [sys.executable, "-m", "guardproxy"]


def free_port() -> int:
    return int(get_free_port())


def run_client(
    cmd: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    timeout: float = CLIENT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a client to completion (bounded, no stdin); the caller checks the exit code."""
    return subprocess.run(
        list(cmd),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    """A process's exit code and output, for assertion messages."""
    return f"{proc.args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def hold_id_in(text: str) -> str:
    """The single hold id a client printed (fails the test if there is none)."""
    found: set[str] = set(HOLD_ID.findall(text))
    assert len(found) == 1, f"expected one hold id in the output, found {found}:\n{text}"
    return found.pop()


def without_log_lines(text: str) -> str:
    """stderr without guardproxy's own JSON log lines (what a person sees of the client)."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("{"))


def wait_for_pending_hold(
    holds: Callable[[str], list[dict[str, Any]]], timeout: float = 15.0
) -> dict[str, Any]:
    """The first pending hold ``holds("pending")`` lists, as soon as there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = holds("pending")
        if pending:
            return pending[0]
        time.sleep(0.05)
    raise AssertionError(f"no hold appeared within {timeout} s")


# ------------------------------------------------------------------------ the record


@dataclass(frozen=True)
class StoredDecision:
    """One line of the decision log, with the action fields tests look at."""

    id: str
    outcome: str
    hold_id: str | None
    session_id: str
    provider: str
    service: str
    operation: str
    verb: str
    environment: str
    resource_type: str
    resource_name: str
    risk_tags: tuple[str, ...]
    rules: tuple[str, ...]
    upstream_status: int | None


def read_decisions(data_dir: Path) -> list[StoredDecision]:
    """Every decision stored under ``data_dir``, oldest first."""
    store = open_store(str(data_dir / "guardproxy.db"))
    try:
        records = store.list_decisions(limit=100_000)
    finally:
        store.close()
    out: list[StoredDecision] = []
    for record in reversed(records):
        action: dict[str, Any] = json.loads(record.action_json)
        decision: dict[str, Any] = json.loads(record.decision_json)
        resource: dict[str, Any] = action.get("resource") or {}
        out.append(
            StoredDecision(
                id=record.id,
                outcome=record.outcome,
                hold_id=record.hold_id,
                session_id=record.session_id,
                provider=str(action.get("provider", "")),
                service=str(action.get("service", "")),
                operation=str(action.get("operation", "")),
                verb=str(action.get("verb", "")),
                environment=str(action.get("environment", "")),
                resource_type=str(resource.get("type", "")),
                resource_name=str(resource.get("name", "")),
                risk_tags=tuple(action.get("risk_tags") or ()),
                rules=tuple(decision.get("determining_rules") or ()),
                upstream_status=record.upstream_status,
            )
        )
    return out


# ------------------------------------------------------------------------- the guard


@dataclass(frozen=True)
class GuardSession:
    """A registered session: what ``guardproxy run`` hands the agent's tools."""

    id: str
    proxy_url: str

    def proxy_env(self) -> dict[str, str]:
        return {
            "HTTP_PROXY": self.proxy_url,
            "HTTPS_PROXY": self.proxy_url,
            "http_proxy": self.proxy_url,
            "https_proxy": self.proxy_url,
            "NO_PROXY": "",
            "no_proxy": "",
        }


class Guard:
    """A started guardproxy (background thread) and the ways to look at it."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self._background = BackgroundGuardproxy(config)
        self._running = False
        self._on_call: OnCall | None = None

    def start(self) -> Guard:
        self._background.start()
        self._running = True
        return self

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._background.stop()

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    @property
    def proxy_port(self) -> int:
        proxy = self._background.service.proxy
        assert proxy is not None, "guardproxy is not started"
        return proxy.port

    @property
    def control_url(self) -> str:
        control = self._background.service.control
        assert control is not None, "guardproxy is not started"
        return f"http://127.0.0.1:{control.port}"

    def control(self) -> ControlClient:
        """The control API as the admin (sessions, runtime; not holds)."""
        token = self.config.control_token_file.read_text(encoding="ascii").strip()
        return ControlClient(self.control_url, token)

    @property
    def on_call(self) -> OnCall:
        """alice and bob, approvers in every group the shipped policies name."""
        if self._on_call is None:
            self._on_call = OnCall(self._background.service.store, self.control_url)
        return self._on_call

    def add_approver(self, name: str, *groups: str) -> str:
        """Another approver in this guard's store; returns their token."""
        return add_approver(self._background.service.store, name, groups)

    def approver(self, name: str = "alice") -> ControlClient:
        return self.on_call.clients[name]

    def session(self, name: str = "e2e") -> GuardSession:
        """Register a session (as ``guardproxy run`` does) and return its proxy URL."""
        registry = self._background.service.registry
        assert registry is not None, "guardproxy is not started"
        session, credential = registry.create(
            name=name, user="e2e", command=["e2e"], cwd=str(self.data_dir), labels=[],
            now=utc_now(),
        )  # fmt: skip
        return GuardSession(
            session.id, proxy_url("127.0.0.1", self.proxy_port, session.id, credential.token)
        )

    def holds(self, state: str = "all") -> list[dict[str, Any]]:
        return self.approver().holds(state)

    def hold(self, hold_id: str) -> dict[str, Any]:
        [found] = [h for h in self.holds() if h["id"] == hold_id]
        return found

    def wait_for_pending_hold(self, timeout: float = 15.0) -> dict[str, Any]:
        """The first pending hold, as soon as one exists (a request is waiting live)."""
        return wait_for_pending_hold(self.holds, timeout)

    def decisions(self) -> list[StoredDecision]:
        """Stored decisions, oldest first (decisions on reads are written in batches)."""
        return read_decisions(self.data_dir)

    def cli(
        self, *args: str, timeout: float = 30.0, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The real ``guardproxy`` CLI against this instance (found via --data-dir)."""
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")},
            **(env or {}),
        }
        return run_client(
            [*guardproxy_cli(), *args, "--data-dir", str(self.data_dir)], env, timeout=timeout
        )


def guard_config(data_dir: Path, **overrides: Any) -> ProxyConfig:
    """Shipped policies, loopback ports picked by the OS, a short hold window."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "policies": POLICIES,
        "listen": "127.0.0.1:0",
        "control": "127.0.0.1:0",
        "hold_window_seconds": 2.0,
    }
    values.update(overrides)
    return ProxyConfig.model_validate(values)


StartGuard = Callable[..., Guard]


def guard_starter(tmp_path: Path) -> Iterator[StartGuard]:
    """Body of the ``start_guard`` fixture (conftest.py): ``start_guard(**ProxyConfig
    fields)`` starts a guardproxy with its data directory under ``tmp_path``; every
    guard started is stopped when the generator is closed (teardown)."""
    started: list[Guard] = []

    def start(**overrides: Any) -> Guard:
        data_dir = tmp_path / f"guardproxy-{len(started)}"
        guard = Guard(guard_config(data_dir, **overrides)).start()
        started.append(guard)
        return guard

    try:
        yield start
    finally:
        for guard in reversed(started):
            guard.stop()


# ------------------------------------------------------------------- guardproxy run


def guarded_run_command(
    data_dir: Path, command: Sequence[str], *proxy_options: str, hold_window: float = 2.0
) -> list[str]:
    """``guardproxy run`` with an embedded proxy and the shipped policies around ``command``."""
    return [
        *guardproxy_cli(),
        "run",
        "--data-dir",
        str(data_dir),
        "--policies",
        str(POLICIES),
        "--hold-window",
        str(hold_window),
        *proxy_options,
        "--",
        *command,
    ]


def guarded_run(
    data_dir: Path,
    command: Sequence[str],
    env: Mapping[str, str],
    *proxy_options: str,
    cwd: Path | None = None,
    timeout: float = CLIENT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` under ``guardproxy run`` to completion (bounded)."""
    clean = {k: v for k, v in env.items() if not k.startswith("GUARDPROXY_")}
    return run_client(
        guarded_run_command(data_dir, command, *proxy_options), clean, cwd=cwd, timeout=timeout
    )

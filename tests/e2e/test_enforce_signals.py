"""Signals to ``guardproxy run --enforce`` reach the agent, in its sandbox, once.

bubblewrap forwards no signal; ``run`` passes each one to the relay inside the sandbox,
which sends it to the agent. A SIGTERM or SIGINT to ``run`` (no terminal here: a
supervisor's ``kill``) must end the agent the way the agent handles it, ``run`` must
exit with the agent's exit code (128 + N when the signal killed it), and nothing may
be left: no agent process, no guard process, no session run directory, no network
namespace, veth link or nftables table (root mode), and the session is ended.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guardproxy.store import open_store

from .enforce import (
    GuardUser,
    enforced_command,
    in_test_namespace,
    leftover_network,
    make_guard_user,
    require_enforce,
    write_hosts,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

AGENT = r"""
import signal, sys, time
handled = sys.argv[1] == "handled"
if handled:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(9))
print("ready", flush=True)
time.sleep(240)
print("not signalled", flush=True)
"""


@pytest.fixture(scope="module")
def guard_user() -> object:
    yield from make_guard_user()


@pytest.fixture(autouse=True)
def _enforce_available() -> None:
    require_enforce()


def _processes_with(marker: str) -> list[str]:
    """Command lines on this machine that contain ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in command:
            found.append(f"{entry.name}: {command}")
    return found


def _processes_of(uid: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    found.append(entry.name)
            except OSError:
                continue
    return found


@pytest.mark.parametrize("mode", ["rootless", "root"])
@pytest.mark.parametrize(
    ("sig", "handled", "expected"),
    [(signal.SIGTERM, True, 7), (signal.SIGINT, False, 128 + signal.SIGINT)],
    ids=["sigterm-handled", "sigint-default"],
)
def test_a_signal_to_run_ends_the_agent_and_everything_is_removed(
    mode: str,
    sig: int,
    handled: bool,
    expected: int,
    guard_user: GuardUser,
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o755)  # the guard user's way to its data directory (root mode)
    marker = f"agent-{secrets.token_hex(6)}"  # in the agent's command line, nowhere else
    agent = tmp_path / f"{marker}.py"
    agent.write_text(AGENT)
    runs = tmp_path / "runs"
    runs.mkdir()
    data_dir = tmp_path / "data"
    options = ["--guard-user", guard_user.name] if mode == "root" else []
    argv = enforced_command(
        data_dir, [sys.executable, str(agent), "handled" if handled else "default"],
        *options, mode=mode,
    )  # fmt: skip
    argv = in_test_namespace(
        argv, hosts=write_hosts(tmp_path / "hosts"),
        guard=guard_user if mode == "root" else None, reachable=[tmp_path],
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    env.pop("XDG_RUNTIME_DIR", None)
    env.update(TMPDIR=str(runs), HOME=str(tmp_path))  # the session's run directory: here
    run = subprocess.Popen(
        argv, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert run.stdout is not None
        ready = run.stdout.readline()
        assert ready.strip() == "ready", (ready, run.stderr.read() if run.stderr else "")
        assert _processes_with(marker), "the agent is running"
        assert list(runs.iterdir()), "the session's run directory exists"
        run.send_signal(sig)  # to run itself: it execs through unshare and sh
        code = run.wait(timeout=120)
        out, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert code == expected, f"{code}\n{out}\n{err}"
    assert "not signalled" not in out
    deadline = time.monotonic() + 10
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(marker) == []
    assert list(runs.iterdir()) == [], "the run directory is removed"
    if mode == "root":
        assert _processes_of(guard_user.uid) == [], "the guard's process has ended"
        assert [x for x in leftover_network() if "table" in x or "link" in x] == []
    [session_id] = set(re.findall(r"session (s-[0-9a-f]+)", err))
    store = open_store(str(data_dir / "guardproxy.db"))
    try:
        session = store.get_session(session_id)
    finally:
        store.close()
    assert session is not None and session.ended_at is not None

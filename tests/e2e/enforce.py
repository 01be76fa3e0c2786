"""Running commands under ``guardproxy run --enforce`` in end-to-end tests.

Tests run as root on CI. Root passes the sandbox's checks either way, so the rootless
path is also run as an unprivileged user (:func:`as_unprivileged`): a throwaway uid
whose view of the filesystem is the same except that the directories the test needs
(this virtualenv's Python, the repository, the test's temporary directory) are
reachable, in a private mount namespace so nothing on the machine changes.
"""

from __future__ import annotations

import json
import os
import pwd
import queue
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from guardproxy.sandbox import EnforceUnavailable, preflight

from .guard_fixtures import CLIENT_TIMEOUT, POLICIES, REPO_ROOT, guardproxy_cli

UNPRIVILEGED_UID = 64_123
"""A uid no account uses: the test's unprivileged user."""


def require_enforce() -> None:
    """Skip unless bubblewrap can run here (CI installs it: a skip there is a failure)."""
    try:
        preflight()
    except EnforceUnavailable as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(error))


def enforced_command(
    data_dir: Path,
    command: Sequence[str],
    *options: str,
    hold_window: float = 1.0,
    mode: str = "rootless",
) -> list[str]:
    """``mode``: rootless is forced (as root, run --enforce picks root mode)."""
    return [
        *guardproxy_cli(), "run", "--enforce", "--enforce-mode", mode, "--data-dir",
        str(data_dir), "--policies", str(POLICIES), "--hold-window", str(hold_window),
        *options, "--", *command,
    ]  # fmt: skip


def run_enforced(
    data_dir: Path,
    command: Sequence[str],
    env: Mapping[str, str],
    *options: str,
    hold_window: float = 1.0,
    timeout: float = CLIENT_TIMEOUT,
    user: int | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``guardproxy run --enforce -- command`` to completion (bounded, no stdin)."""
    argv = enforced_command(data_dir, command, *options, hold_window=hold_window)
    clean = {k: v for k, v in env.items() if not k.startswith("GUARDPROXY_")}
    if user is not None:
        argv = as_unprivileged(argv, user, reachable=[data_dir.parent])
    return subprocess.run(
        argv, env=clean, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def _hidden_ancestor(path: Path, uid: int) -> Path | None:
    """The highest directory above ``path`` that ``uid`` (not its owner) cannot enter."""
    found = None
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if parent.stat().st_uid != uid and not mode & 0o001:
            found = parent
            break
    return found


def _staging(uid: int, needed: Sequence[Path]) -> list[str]:
    """Shell lines that make ``needed`` reachable by ``uid``: each directory above them
    that others cannot enter (``/root`` for a pyenv Python, pytest's 0700 base) is
    replaced, in the private mount namespace, by a tmpfs holding just those paths."""
    script = ['stage="$(mktemp -d -p /tmp)"']  # not in TMPDIR: it may be under a hidden one
    staged = 0
    for hidden in sorted({h for p in needed if (h := _hidden_ancestor(p, uid)) is not None}):
        inside = [p for p in needed if p.is_relative_to(hidden)]
        first = staged
        for path in inside:
            script.append(f'mkdir "$stage/{staged}" && mount --rbind {path} "$stage/{staged}"')
            staged += 1
        script.append(f"mount -t tmpfs -o mode=0755 tmpfs {hidden}")
        for index, path in enumerate(inside, start=first):
            script.append(f'mkdir -p {path} && mount --move "$stage/{index}" {path}')
    script.append('rmdir "$stage"/* "$stage" 2>/dev/null || true')  # never rm -r: mounts
    return script


def _python_paths() -> list[Path]:
    return [Path(sys.base_prefix).resolve(), REPO_ROOT, Path(sys.prefix).resolve()]


def as_unprivileged(argv: list[str], uid: int, *, reachable: Sequence[Path]) -> list[str]:
    """``argv`` as ``uid`` (no capabilities), with ``reachable`` and what this Python
    needs made enterable (see :func:`_staging`)."""
    if os.geteuid() != 0:
        pytest.skip("running as another user needs root")
    needed = [*_python_paths(), *[p.resolve() for p in reachable]]
    script = ["set -e"]
    script += [f"chown -R {uid}:{uid} {shlex.quote(str(path))}" for path in reachable]
    script += _staging(uid, needed)
    quoted = " ".join(shlex.quote(a) for a in argv)
    script.append(
        f"exec setpriv --reuid={uid} --regid={uid} --clear-groups "
        f"--inh-caps=-all --bounding-set=-all env HOME={reachable[0]} USER=agent LOGNAME=agent "
        f"{quoted}"
    )
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(script)]


# ----------------------------------------------------------------- root mode, names


UPSTREAM_NAME = "guardproxy-upstream"
"""A name the test's /etc/hosts gives 127.0.0.1: how a sandboxed client that ignores the
proxy reaches the test's upstreams in root mode (its own 127.0.0.1 is the sandbox's).
One label: moto reads a dotted Host as an S3 bucket's virtual host."""
LOOPBACK_NAMES = (UPSTREAM_NAME, "compute.googleapis.com", "api.anthropic.com")
"""Every name the tests' /etc/hosts maps to 127.0.0.1 (the guard resolves names there)."""


def write_hosts(path: Path) -> Path:
    """The /etc/hosts a test's `run` (and so its guard) sees: this machine, and
    :data:`LOOPBACK_NAMES` on loopback. Nothing is ever looked up in DNS: with
    ``--upstream-allow loopback`` the guard connects to these names only."""
    path.write_text(
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
        f"127.0.0.1 {' '.join(LOOPBACK_NAMES)}\n",
        encoding="ascii",
    )
    return path


@dataclass(frozen=True)
class GuardUser:
    """A throwaway system user for root mode's guard, removed when the tests end."""

    name: str
    uid: int


def make_guard_user() -> Iterator[GuardUser]:
    """Body of a ``guard_user`` fixture: ``useradd`` a unique system user, ``userdel`` it."""
    if os.geteuid() != 0:
        pytest.skip("root mode needs root")
    name = f"gpe2e{os.getpid()}x{secrets.token_hex(2)}"
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
         "/nonexistent", "--shell", "/usr/sbin/nologin", name],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    try:
        yield GuardUser(name, pwd.getpwnam(name).pw_uid)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60, check=False)


def in_test_namespace(
    argv: list[str], *, hosts: Path, guard: GuardUser | None, reachable: Sequence[Path]
) -> list[str]:
    """``argv`` as root in a private mount namespace whose /etc/hosts is ``hosts`` and,
    for root mode, where ``guard`` can reach this Python, the repository and
    ``reachable`` (see :func:`_staging`). Nothing on the machine changes."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a private mount namespace)")
    script = ["set -e", f"mount --bind {shlex.quote(str(hosts))} /etc/hosts"]
    if guard is not None:
        script += _staging(guard.uid, [*_python_paths(), *[p.resolve() for p in reachable]])
    script.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(script)]


def leftover_network() -> list[str]:
    """Root mode's namespaces, links and nftables tables that exist on this machine."""
    from guardproxy.sandbox.network import leftovers  # noqa: PLC0415
    from guardproxy.sandbox.preflight import find_tools  # noqa: PLC0415

    return leftovers(find_tools())


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


# ------------------------------------------------- one session, steps, approval inside


STEP_DRIVER = r"""
import json, os, subprocess, sys, time
for step in json.loads(sys.argv[1]):
    if "wait" in step:
        print(json.dumps({"waiting": step["wait"]}), flush=True)
        deadline = time.monotonic() + 300
        while not os.path.exists(step["wait"]):
            if time.monotonic() > deadline:
                sys.exit(99)
            time.sleep(0.05)
        continue
    try:
        done = subprocess.run(step["argv"], capture_output=True, text=True,
                              timeout=step.get("timeout", 150), cwd=step.get("cwd"))
        code, out = done.returncode, done.stdout + done.stderr
    except (OSError, subprocess.TimeoutExpired) as error:
        code, out = 98, repr(error)
    print(json.dumps({"step": step["name"], "code": code, "out": out[-4000:]}), flush=True)
    if step.get("must_pass") and code != 0:
        sys.exit(1)
"""


class EnforcedSession:
    """``guardproxy run --enforce`` (its own guard) running steps in one session, in the
    background: the test reads each step's result as it comes, approves a hold while
    the session waits at a ``wait`` step, then lets it go on (the identical retry is
    then the same session's). Root mode runs under :func:`in_test_namespace`."""

    def __init__(
        self,
        tmp_path: Path,
        mode: str,
        env: Mapping[str, str],
        *,
        guard: GuardUser | None = None,
        options: Sequence[str] = (),
        reachable: Sequence[Path] = (),
        hold_window: float = 1.0,
    ) -> None:
        self.tmp_path = tmp_path
        tmp_path.chmod(0o755)  # pytest's 0700: the guard user must reach its data directory
        self.mode = mode
        self.env = {k: v for k, v in env.items() if not k.startswith("GUARDPROXY_")}
        self.guard = guard
        self.options = list(options)
        self.reachable = [tmp_path, *reachable]
        self.hold_window = hold_window
        self.data_dir = tmp_path / "data"
        self.approved = tmp_path / "approved"
        self.results: dict[str, dict[str, Any]] = {}
        self.stderr = ""
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def argv(self, command: Sequence[str]) -> list[str]:
        options = [*self.options, "--upstream-allow", "loopback"]
        if self.guard is not None:
            options += ["--guard-user", self.guard.name]
        argv = enforced_command(self.data_dir, command, *options, hold_window=self.hold_window,
                                mode=self.mode)  # fmt: skip
        hosts = write_hosts(self.tmp_path / "hosts")
        guard = self.guard if self.mode == "root" else None
        return in_test_namespace(argv, hosts=hosts, guard=guard, reachable=self.reachable)

    def start(self, steps: list[dict[str, Any]], *, cwd: Path | None = None) -> None:
        driver = self.tmp_path / "steps.py"
        driver.write_text(STEP_DRIVER)
        command = [sys.executable, str(driver), json.dumps(steps)]
        self._process = subprocess.Popen(
            self.argv(command), env=self.env, cwd=cwd or self.tmp_path,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def until_waiting(self, timeout: float = 300.0) -> dict[str, dict[str, Any]]:
        """The results so far, once the session waits for the approval."""
        self._collect(timeout, stop_at_wait=True)
        return self.results

    def _collect(self, timeout: float, *, stop_at_wait: bool) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the session said nothing for {timeout:.0f}s: "
                                     f"{self.results}\n{self._stderr()}") from None  # fmt: skip
            if line is None:
                if stop_at_wait:
                    raise AssertionError(f"the session ended early: {self.results}\n"
                                         f"{self._stderr()}")  # fmt: skip
                return
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            if "waiting" in entry:
                if stop_at_wait:
                    return
                continue
            if "step" in entry:
                self.results[entry["step"]] = entry

    def _stderr(self) -> str:
        process = self._process
        if process is None or process.stderr is None:
            return ""
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            return "(still running)"
        if not self.stderr:
            self.stderr = process.stderr.read()
        return "\n".join(x for x in self.stderr.splitlines() if not x.startswith("{"))[-3000:]

    def approve(self, hold_id: str) -> dict[str, Any]:
        """Approve as two on-call people, through the session's guard's control API."""
        from guardproxy.control.client import ControlClient  # noqa: PLC0415
        from guardproxy.store import open_store  # noqa: PLC0415

        from .approvers import add_approver  # noqa: PLC0415

        runtime = json.loads((self.data_dir / "runtime.json").read_text())
        store = open_store(str(self.data_dir / "guardproxy.db"))
        try:
            tokens = [add_approver(store, f"{name}-{secrets.token_hex(2)}") for name in "ab"]
        finally:
            store.close()
        hold: dict[str, Any] = {}
        for token in tokens:
            client = ControlClient(str(runtime["control"]), token)
            hold = client.resolve(hold_id, approve=True, reason="approved in the enforce matrix")
            hold = hold["hold"]
            if hold["state"] != "pending":
                break
        return hold

    def proceed(self) -> None:
        self.approved.write_text("yes")

    def finish(self, timeout: float = 300.0) -> int:
        """The session's exit code, once every step has reported."""
        self._collect(timeout, stop_at_wait=False)
        assert self._process is not None
        code = self._process.wait(timeout=60)
        self._stderr()
        return code

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

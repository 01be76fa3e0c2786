"""What ``run --enforce`` does beyond a cooperative run: supervise the sandbox, and in
root mode, the guard's own process.

Signals: bubblewrap forwards none, so ``run`` writes each signal it receives to a pipe
read by the relay, the agent's parent inside the sandbox (guardproxy/sandbox/relay.py).
bubblewrap is started with SIGINT and SIGQUIT ignored: a terminal sends them to the
whole foreground process group, the agent included, and bubblewrap would die of them
and take the sandbox with it. ``run`` passes them on itself only when no terminal
delivered them (``kill -INT``, a supervisor), so the agent never gets one twice.

Root mode's guard runs as its own user in a process of its own
(``python -m guardproxy.cli.sandbox_guard``), spoken to over its stdin and stdout:
:class:`GuardChild`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guardproxy.sandbox.account import Account
from guardproxy.sandbox.launch import SandboxLaunch

FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
TTY_SIGNALS = (signal.SIGINT, signal.SIGQUIT)
GUARD_START_TIMEOUT = 120.0
GUARD_STOP_TIMEOUT = 20.0


class EnforceError(Exception):
    """The enforced session could not be set up; one line, what and why."""


@dataclass
class SignalPipe:
    """``run``'s signals, one byte each, for the relay inside the sandbox."""

    read_fd: int
    write_fd: int

    def send(self, sig: int) -> None:
        if self.write_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self.write_fd, bytes([sig]))

    def close_read_end(self) -> None:
        """Once the sandbox has it: the relay alone holds it then."""
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1

    def close(self) -> None:
        self.close_read_end()
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1


@contextlib.contextmanager
def signal_pipe() -> Iterator[SignalPipe]:
    read_fd, write_fd = os.pipe()
    pipe = SignalPipe(read_fd, write_fd)
    try:
        yield pipe
    finally:
        pipe.close()


def terminal_delivers(sig: int) -> bool:
    """Whether a terminal's SIGINT/SIGQUIT reached the agent too: this process is in
    the foreground process group of its controlling terminal (the agent, in the same
    group, got it from the terminal). A ``kill`` while in the foreground is then not
    passed on; without a terminal, every such signal is."""
    if sig not in TTY_SIGNALS:
        return False
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def _in_network_namespace(path: Path | None) -> Iterator[None]:
    """This thread in ``path``'s network namespace (children started meanwhile stay in
    it); back where it was afterwards."""
    if path is None:
        yield
        return
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.setns(target, os.CLONE_NEWNET)
        try:
            yield
        finally:
            os.setns(original, os.CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(original)


def supervise_sandbox(
    launch: SandboxLaunch,
    environment: dict[str, str],
    pipe: SignalPipe,
    *,
    groups: list[int] | None = None,
) -> int:
    """Start bubblewrap, pass signals to the relay, return the agent's exit code."""
    watched = (*FORWARDED, *TTY_SIGNALS)
    previous = {sig: signal.getsignal(sig) for sig in watched}
    for sig in TTY_SIGNALS:  # inherited by bubblewrap: a terminal's Ctrl-C must not end it
        signal.signal(sig, signal.SIG_IGN)
    identity: dict[str, Any] = {}
    if launch.uid is not None and launch.uid != os.getuid():
        identity = {"user": launch.uid, "group": launch.gid, "extra_groups": groups or []}
    try:
        try:
            with _in_network_namespace(launch.netns):
                child = subprocess.Popen(
                    launch.argv, env=environment, pass_fds=launch.pass_fds, **identity
                )
        except OSError as error:
            raise EnforceError(
                f"cannot start the sandbox ({launch.argv[0]}): {error.strerror}"
            ) from None
        finally:
            pipe.close_read_end()

        def forward(sig: int, _frame: object) -> None:
            if child.poll() is None and not terminal_delivers(sig):
                pipe.send(sig)

        for sig in watched:
            signal.signal(sig, forward)
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


class GuardChild:
    """Root mode's guard: ``python -m guardproxy.cli.sandbox_guard`` as ``account``.

    Its first line on stdout says where it listens and which session it created (or
    why it could not start); closing its stdin ends the session and stops it.
    """

    def __init__(self, account: Account, data_dir: Path) -> None:
        self._account = account
        self._data_dir = data_dir
        self._process: subprocess.Popen[str] | None = None
        self.report: dict[str, Any] = {}

    def start(self, config: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
        environment = {
            k: v for k, v in os.environ.items()
            if k not in ("HOME", "USER", "LOGNAME", "MAIL") and not k.startswith("SUDO_")
        }  # fmt: skip
        environment.update(HOME=str(self._data_dir), USER=self._account.name,
                           LOGNAME=self._account.name)  # fmt: skip
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "guardproxy.cli.sandbox_guard"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment,
                cwd="/", user=self._account.uid, group=self._account.gid, extra_groups=[],
                start_new_session=True,  # a terminal's Ctrl-C is the agent's, not the guard's
            )  # fmt: skip
        except OSError as error:
            raise EnforceError(
                f"cannot start the guard as {self._account.name} ({sys.executable}): "
                f"{error.strerror}; install guardproxy where that user can run it"
            ) from None
        self._send({"config": config, "session": session})
        self.report = self._receive(GUARD_START_TIMEOUT)
        if "error" in self.report:
            raise EnforceError(str(self.report["error"]))
        return self.report

    def reload_tls(self) -> None:
        self._send({"reload_tls": True})
        answer = self._receive(30.0)
        if "error" in answer:
            raise EnforceError(str(answer["error"]))

    def _send(self, message: dict[str, Any]) -> None:
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()
        except OSError:
            pass  # it died: _receive says so

    def _receive(self, timeout: float) -> dict[str, Any]:
        process = self._process
        assert process is not None and process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise EnforceError(f"the guard did not answer within {timeout:.0f}s")
            ready, _, _ = select.select([process.stdout], [], [], left)
            if ready:
                break
        line = process.stdout.readline()
        if not line:
            code = process.wait()
            raise EnforceError(
                f"the guard (as {self._account.name}) exited with code {code} before it "
                "was ready; its error is above"
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        """End the session and stop the guard: its stdin closes; killed if it hangs."""
        process = self._process
        if process is None:
            return
        self._process = None
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=GUARD_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


__all__ = [
    "EnforceError",
    "GuardChild",
    "SignalPipe",
    "signal_pipe",
    "supervise_sandbox",
    "terminal_delivers",
]

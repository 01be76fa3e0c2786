"""The agent's parent inside an enforced sandbox: it passes on the signals `run` receives.

``python -I -S relay.py FD -- COMMAND [ARGS...]``, run as a script (standard library
only, no site: it starts in milliseconds). bubblewrap does not forward signals to the
sandbox (containers/bubblewrap#369), and the agent sits in PID namespaces of its own,
where ``guardproxy run`` cannot name it. So ``run`` writes each signal it receives as
one byte to a pipe whose read end is ``FD``, and the relay sends that signal to the
agent, its child. The agent's exit code (128 + N when signal N ended it) is the
relay's, and so bubblewrap's and ``run``'s.

A terminal's SIGINT and SIGQUIT (Ctrl-C, Ctrl-\\) reach the agent from the terminal
itself, as the whole foreground process group gets them: bubblewrap is started with
both ignored (it would die of them and take the sandbox with it), and the relay
ignores them too, through handlers, which ``exec`` resets, so the agent gets them with
their default action. A relay killed by the agent ends the sandbox (bubblewrap exits
when its command does): it cannot be used to escape anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

TTY_SIGNALS = (signal.SIGINT, signal.SIGQUIT)


def _ignore(_signal: int, _frame: object) -> None:
    return


def relay_signals(pipe_fd: int, agent: subprocess.Popen[bytes]) -> None:
    """Send the agent each signal number read from ``pipe_fd``, until it closes."""
    with os.fdopen(pipe_fd, "rb", buffering=0) as pipe:
        while chunk := pipe.read(64):
            for number in chunk:
                if agent.poll() is None:
                    try:
                        agent.send_signal(number)
                    except (OSError, ValueError):
                        continue


def main(argv: list[str]) -> int:
    if len(argv) < 3 or not argv[0].isdigit() or argv[1] != "--":
        print("usage: relay.py FD -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    pipe_fd, command = int(argv[0]), argv[2:]
    for sig in TTY_SIGNALS:
        signal.signal(sig, _ignore)  # a handler, not SIG_IGN: exec gives the agent the default
    try:
        agent = subprocess.Popen(command)  # close_fds: the agent does not get the pipe
    except OSError as error:
        print(f"guardproxy: cannot run {command[0]}: {error.strerror}", file=sys.stderr)
        os.close(pipe_fd)
        return 127
    threading.Thread(target=relay_signals, args=(pipe_fd, agent), daemon=True).start()
    code = agent.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

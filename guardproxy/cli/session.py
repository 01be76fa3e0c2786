"""``guardproxy run`` and ``guardproxy env``: put an agent session behind the guard.

The commands and their options are here; what each kind of run does is apart: a guard of
its own (session_embedded.py), attached to a running one (session_attached.py, also
``env``), root mode's enforced run (session_root.py), and what they share
(session_setup.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from guardproxy.cli.enforce import (
    EnforceError,
)
from guardproxy.cli.serve import ConfigError, add_proxy_options
from guardproxy.cli.session_attached import attach_session, run_attached
from guardproxy.cli.session_embedded import run_embedded
from guardproxy.cli.session_root import root_plan_or_none, run_root
from guardproxy.cli.session_setup import (
    Sandbox,
    SessionError,
    register_session,
    session_body,
)
from guardproxy.control.client import ControlError
from guardproxy.sandbox import (
    EnforceUnavailable,
    create_run_dir,
    preflight,
)
from guardproxy.sandbox.account import (
    DEFAULT_GUARD_USER,
)
from guardproxy.sandbox.preflight import MODES, enforce_mode
from guardproxy.server import StartError
from guardproxy.session.environment import (
    export_lines,
)

__all__ = ["SessionError", "add_commands", "cmd_env", "cmd_run", "register_session", "session_body"]


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


def cmd_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("guardproxy: run needs a command: guardproxy run -- COMMAND [ARGS...]",
              file=sys.stderr)  # fmt: skip
        return 2
    sandbox: Sandbox | None = None
    try:
        if getattr(args, "enforce", False):
            if enforce_mode(args.enforce_mode, attached=bool(args.proxy)) == "root":
                plan = root_plan_or_none(args)
                if plan is not None:
                    return run_root(args, command, plan)
            sandbox = Sandbox(preflight(), create_run_dir(), args.allow_unix_sockets)
        if args.proxy:
            return run_attached(args, command, sandbox)
        return run_embedded(args, command, sandbox)
    except (
        ConfigError, ControlError, SessionError, StartError, EnforceUnavailable, EnforceError
    ) as error:  # fmt: skip
        print(f"guardproxy: {error}", file=sys.stderr)
        return 2
    finally:
        if sandbox is not None:
            shutil.rmtree(sandbox.run_dir, ignore_errors=True)


def cmd_env(args: argparse.Namespace) -> int:
    try:
        prepared, _ = attach_session(args, [os.environ.get("SHELL", "sh")])
    except (ControlError, SessionError) as error:
        print(f"guardproxy: {error}", file=sys.stderr)
        return 2
    print(f"# guardproxy session {prepared.session_id} via {prepared.proxy_address}")
    print(export_lines(prepared.environment), end="")
    # real credentials the guard brokers leave this shell (its tools get the stand-ins)
    for name in sorted(set(prepared.removed) & set(os.environ) - set(prepared.environment)):
        print(f"unset {name}")
    return 0

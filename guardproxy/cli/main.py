"""The ``guardproxy`` command."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import typing
from collections.abc import Sequence

from guardproxy import __version__
from guardproxy.cli.errors import UsageError
from guardproxy.log import configure_logging

# command -> module defining it; only the one used is imported, so `guardproxy approve`
# does not load mitmproxy, botocore and the policy engine first
_MODULES = {
    "serve": "serve",
    "run": "session",
    "env": "session",
    "holds": "oncall",
    "approve": "oncall",
    "deny": "oncall",
    "approvers": "approvers",
    "policy": "policy",
    "recognise": "recognise",
    "audit": "audit",
    "replay": "replay",
}


SECRET_OPTIONS = frozenset({"--token"})
"""Options whose value is a secret. Old tokens (and any pasted secret) may start with
`-`, which argparse takes for an option (`--token -6GB3...`: "expected one argument");
when parsing fails, such a value is joined to its option (`--token=-6GB3...`)."""


class _ArgumentError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors main() reports (after one more try)."""

    def error(self, message: str) -> typing.NoReturn:
        raise _ArgumentError(self, message)


def join_secret_values(argv: Sequence[str]) -> list[str]:
    """``--token VALUE`` as ``--token=VALUE`` when VALUE starts with `-`, up to `--`
    (what follows `--` belongs to the command `run` starts)."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        argument = argv[index]
        if argument == "--":
            joined.extend(argv[index:])
            break
        following = argv[index + 1] if index + 1 < len(argv) else None
        if argument in SECRET_OPTIONS and following is not None and following.startswith("-"):
            joined.append(f"{argument}={following}")
            index += 2
            continue
        joined.append(argument)
        index += 1
    return joined


def _wanted(argv: Sequence[str]) -> list[str]:
    """The modules to load: the named command's, or all of them (for --help)."""
    command = next((a for a in argv if not a.startswith("-") and a in _MODULES), None)
    if command is None:
        return sorted(set(_MODULES.values()))
    return [_MODULES[command]]


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="guardproxy",
        description="Deterministic guardrails for AI coding agents.",
    )
    parser.add_argument("--version", action="version", version=f"guardproxy {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _wanted(argv):
        importlib.import_module(f"guardproxy.cli.{name}").add_commands(subparsers)
    return parser


def parse(parser: argparse.ArgumentParser, arguments: list[str]) -> argparse.Namespace:
    """The parsed command line; a secret starting with `-` is read as the option's value
    (see SECRET_OPTIONS). Exits 2 with argparse's usage message on bad arguments."""
    try:
        return parser.parse_args(arguments)
    except _ArgumentError as error:
        joined = join_secret_values(arguments)
        if joined != arguments:
            try:
                return parser.parse_args(joined)
            except _ArgumentError:
                pass
        error.parser.print_usage(sys.stderr)
        print(f"{error.parser.prog}: error: {error.message}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args = parse(parser, arguments)
    # the proxy writes its lines off the request path (guardproxy/log.py)
    configure_logging(level=args.log_level, background=getattr(args, "background_log", False))
    try:
        code: int = args.handler(args)
    except UsageError as error:
        print(f"guardproxy: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1
    except OSError as error:  # a file or directory the command needed: one line, no traceback
        where = f" {error.filename}" if error.filename else ""
        print(f"guardproxy: cannot use{where}: {error.strerror or error}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug: say so in one line; the traceback at debug level
        if args.log_level == "debug":
            traceback.print_exc()
        print(
            f"guardproxy: internal error: {type(error).__name__}: {error} (this is a bug; "
            "rerun with --log-level debug for the traceback and report it)",
            file=sys.stderr,
        )
        return 70
    return code


if __name__ == "__main__":
    sys.exit(main())

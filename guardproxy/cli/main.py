"""The ``guardproxy`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from guardproxy import __version__
from guardproxy.cli import oncall, policy, recognise, serve, session
from guardproxy.log import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guardproxy",
        description="Deterministic guardrails for AI coding agents.",
    )
    parser.add_argument("--version", action="version", version=f"guardproxy {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_commands(subparsers)
    session.add_commands(subparsers)
    oncall.add_commands(subparsers)
    policy.add_commands(subparsers)
    recognise.add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(level=args.log_level)
    try:
        code: int = args.handler(args)
    except policy.UsageError as error:
        print(f"guardproxy: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())

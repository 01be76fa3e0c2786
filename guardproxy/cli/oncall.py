"""``guardproxy holds``, ``approve`` and ``deny``: for the human on call."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

from guardproxy.cli.style import Style
from guardproxy.control.client import ControlClient, ControlError


def _control_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control", metavar="URL", help="control API URL (default: found)")
    parser.add_argument("--token", help="control API token (default: data directory)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_commands(subparsers: Any) -> None:
    holds = subparsers.add_parser("holds", help="list held actions")
    _control_options(holds)
    holds.add_argument(
        "--state",
        default="pending",
        help="pending (default), approved, denied, expired, released or all",
    )
    holds.add_argument("--watch", action="store_true", help="keep listing as holds arrive")
    holds.set_defaults(handler=cmd_holds)
    for name, text in (("approve", "release a held action"), ("deny", "refuse a held action")):
        command = subparsers.add_parser(name, help=text)
        command.add_argument("hold_id", metavar="HOLD_ID")
        command.add_argument("--reason", required=True, help="why (kept in the audit trail)")
        command.add_argument("--by", default="", help="who decides (default: your user name)")
        _control_options(command)
        command.set_defaults(handler=cmd_resolve, approve=name == "approve")


def _client(args: argparse.Namespace) -> ControlClient:
    return ControlClient.locate(url=args.control, token=args.token, data_dir=args.data_dir)


def _line(hold: dict[str, Any], style: Style) -> str:
    state = style(hold["state"], "yellow" if hold["state"] == "pending" else "dim")
    rules = ", ".join(hold["rules"])
    approval = hold.get("approval") or {}
    need = f"{approval.get('quorum', 1)} of {', '.join(approval.get('groups', []))}"
    return (f"{style(hold['id'], 'bold')}  {state}  {hold['summary']}  session {hold['session']}"
            f"\n    {hold['message']}\n    rules: {rules}; needs {need}; "
            f"expires {hold['expires_at']}")  # fmt: skip


def cmd_holds(args: argparse.Namespace) -> int:
    style = Style()
    try:
        client = _client(args)
        seen: set[str] = set()
        while True:
            holds = client.holds(args.state)
            fresh = [h for h in holds if h["id"] not in seen]
            if args.json:
                for hold in fresh if args.watch else []:
                    print(json.dumps(hold), flush=True)
                if not args.watch:
                    print(json.dumps({"holds": holds}, indent=2))
            else:
                if not holds and not args.watch:
                    print("no holds" if args.state == "all" else f"no {args.state} holds")
                for hold in fresh:
                    print(_line(hold, style), flush=True)
            seen.update(h["id"] for h in holds)
            if not args.watch:
                return 0
            time.sleep(1.0)
    except ControlError as error:
        print(f"guardproxy: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    by = args.by or getpass.getuser()
    try:
        hold = _client(args).resolve(args.hold_id, approve=args.approve, reason=args.reason, by=by)
    except ControlError as error:
        print(f"guardproxy: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(hold, indent=2))
    else:
        verb = "approved" if args.approve else "denied"
        print(f"{hold['id']} {verb} by {hold['resolved_by']}: {hold['summary']}")
    return 0

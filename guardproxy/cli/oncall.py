"""``guardproxy holds``, ``approve`` and ``deny``: for the human on call.

They authenticate with the approver's own token (``--token``,
``GUARDPROXY_APPROVER_TOKEN`` or ``~/.config/guardproxy/approver-token``), so the
verdict is theirs; the admin token in the data directory is not an approver.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from guardproxy.cli.style import Style
from guardproxy.control.client import ControlClient, ControlError


def _control_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control", metavar="URL", help="control API URL (default: found)")
    parser.add_argument(
        "--token",
        help="your approver token (default: $GUARDPROXY_APPROVER_TOKEN, "
        "then ~/.config/guardproxy/approver-token)",
    )
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
    holds.add_argument("--session", help="only this session's holds")
    holds.add_argument("--watch", action="store_true", help="keep listing as holds arrive")
    holds.set_defaults(handler=cmd_holds)
    for name, text in (("approve", "approve a held action"), ("deny", "refuse a held action")):
        command = subparsers.add_parser(name, help=text)
        command.add_argument("hold_id", metavar="HOLD_ID")
        command.add_argument("--reason", required=True, help="why (kept in the audit trail)")
        _control_options(command)
        command.set_defaults(handler=cmd_resolve, approve=name == "approve")


def _client(args: argparse.Namespace) -> ControlClient:
    return ControlClient.as_approver(url=args.control, token=args.token, data_dir=args.data_dir)


def _line(hold: dict[str, Any], style: Style) -> str:
    state = style(hold["state"], "yellow" if hold["state"] == "pending" else "dim")
    rules = ", ".join(hold["rules"]) or "default"
    approval = hold.get("approval") or {}
    groups = ", ".join(approval.get("groups", [])) or "any approver"
    progress = hold["progress"]["text"]
    after = f"expires {hold['expires_at']}" if hold["state"] == "pending" else (
        f"by {hold['resolved_by']}: {hold['reason']}" if hold.get("resolved_by") else ""
    )  # fmt: skip
    ended = f" {style('(ended)', 'yellow')}" if hold.get("session_ended") else ""
    release = hold.get("release") or ""
    on_call = "".join(_on_call_line(group, style) for group in hold.get("oncall") or [])
    return (f"{style(hold['id'], 'bold')}  {state}  {hold['summary']}  session {hold['session']}"
            f"{ended}\n    {hold['message']}\n    rules: {rules}; {progress} (from {groups}); "
            f"{after}" + (f"\n    {release}" if release else "") + on_call)  # fmt: skip


def _on_call_line(group: dict[str, Any], style: Style) -> str:
    """``    on call (platform-primary): alice (rotation ...); level 1 paged via ...``."""
    summary = str(group.get("summary", ""))
    if group.get("stale"):
        summary = style(summary, "yellow")
    paged = str(group.get("paged_text", ""))
    return f"\n    on call ({group.get('schedule', '')}): {summary}; {paged}"


def cmd_holds(args: argparse.Namespace) -> int:
    style = Style()
    try:
        client = _client(args)
        seen: dict[str, str] = {}
        while True:
            holds = client.holds(args.state, args.session)
            # in --watch, a hold is shown again when its state or progress changes
            fresh = [h for h in holds if seen.get(h["id"]) != _mark(h)]
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
            seen.update((h["id"], _mark(h)) for h in holds)
            if not args.watch:
                return 0
            time.sleep(1.0)
    except ControlError as error:
        print(f"guardproxy: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _mark(hold: dict[str, Any]) -> str:
    on_call = [(g.get("summary"), g.get("paged_text")) for g in hold.get("oncall") or []]
    return f"{hold['state']}:{hold['progress']['text']}:{hold.get('session_ended')}:{on_call}"


def cmd_resolve(args: argparse.Namespace) -> int:
    try:
        result = _client(args).resolve(args.hold_id, approve=args.approve, reason=args.reason)
    except ControlError as error:
        if args.json and isinstance(error.body, dict):
            print(json.dumps(error.body, indent=2))
        print(f"guardproxy: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        hold = result["hold"]
        print(f"{hold['id']} ({hold['summary']}): {result['outcome']}")
    return 0

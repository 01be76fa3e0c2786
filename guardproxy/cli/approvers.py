"""``guardproxy approvers add|list|remove|link|unlink``: who may approve holds (an
admin's job).

These work on the store directly, on the guardproxy host: managing approvers is an
administrative act, not something a remote token may do.  ``add`` prints the new
approver's token once; only its sha256 is stored.  ``link`` ties an approver to who they
are elsewhere: the Slack user whose clicks are theirs, the PagerDuty user or the Opsgenie
username that puts them on call.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from guardproxy.control.client import DEFAULT_DATA_DIR, approver_token_file
from guardproxy.store import (
    AlreadyExistsError,
    Approver,
    ApproverLink,
    NotFoundError,
    StoreError,
    hash_token,
)
from guardproxy.store import open_store as _open_store
from guardproxy.store.base import Store

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_IDENTITIES = {
    "slack": (re.compile(r"^[UW][A-Z0-9]{2,}$"), "a Slack user id such as U024BE7LH"),
    "pagerduty": (
        re.compile(r"^([A-Z0-9]{2,}|[^@\s]+@[^@\s]+)$"),
        "a PagerDuty user id such as PXPGF42, or the user's email",
    ),
    "opsgenie": (re.compile(r"^[^@\s]+@[^@\s]+$"), "an Opsgenie username (an email)"),
}
"""What each kind of identity looks like; emails are kept in lower case."""


def add_commands(subparsers: Any) -> None:
    approvers = subparsers.add_parser("approvers", help="manage who may approve holds")
    commands = approvers.add_subparsers(dest="approvers_command", required=True, metavar="ACTION")
    add = commands.add_parser("add", help="add an approver and print their token once")
    add.add_argument("name", metavar="NAME", help="the person (their login name)")
    add.add_argument(
        "--group", action="append", required=True, dest="groups", metavar="GROUP",
        help="a group they belong to (repeat for several), as named in policies",
    )  # fmt: skip
    add.set_defaults(handler=cmd_add)
    listing = commands.add_parser("list", help="list approvers and their groups")
    listing.set_defaults(handler=cmd_list)
    remove = commands.add_parser("remove", help="remove an approver (their token stops working)")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(handler=cmd_remove)
    link = commands.add_parser(
        "link", help="tie an approver to their Slack user and their PagerDuty/Opsgenie identity"
    )
    link.add_argument("name", metavar="NAME")
    link.add_argument("--slack", metavar="USER_ID", help="their Slack user id (U…)")
    link.add_argument("--pagerduty", metavar="ID_OR_EMAIL", help="their PagerDuty user id or email")
    link.add_argument("--opsgenie", metavar="USERNAME", help="their Opsgenie username")
    link.set_defaults(handler=cmd_link)
    unlink = commands.add_parser("unlink", help="forget an approver's identity elsewhere")
    unlink.add_argument("name", metavar="NAME")
    for kind in _IDENTITIES:
        unlink.add_argument(f"--{kind}", action="store_true", help=f"forget their {kind} identity")
    unlink.set_defaults(handler=cmd_unlink)
    for command in (add, listing, remove, link, unlink):
        command.add_argument("--data-dir", type=Path, metavar="DIR")
        command.add_argument("--store", metavar="URL", help="database URL (default: data dir)")
        command.add_argument("--json", action="store_true", help="machine-readable output")


def _open(args: argparse.Namespace) -> Store:
    if args.store:
        return _open_store(args.store)
    directory = args.data_dir or Path(os.environ.get("GUARDPROXY_DATA_DIR") or DEFAULT_DATA_DIR)
    path = directory / "guardproxy.db"
    if not path.exists():
        raise StoreError(
            f"no guardproxy store at {path}; start `guardproxy serve` once, or pass --data-dir"
        )
    return _open_store(str(path))


def _fail(message: str) -> int:
    print(f"guardproxy: {message}", file=sys.stderr)
    return 1


def _as_json(approver: Approver, links: list[ApproverLink] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": approver.name,
        "groups": list(approver.groups),
        "created_at": approver.created_at.isoformat(),
    }
    if links is not None:
        found["links"] = {link.kind: link.external_id for link in links}
    return found


def cmd_add(args: argparse.Namespace) -> int:
    if not _NAME.match(args.name):
        return _fail(f"approver name {args.name!r}: use letters, digits and . _ @ -")
    bad = [g for g in args.groups if not _GROUP.match(g)]
    if bad:
        return _fail(f"group {bad[0]!r}: use letters, digits and . _ -")
    token = "gpa_" + secrets.token_urlsafe(32)
    approver = Approver(
        name=args.name,
        groups=tuple(dict.fromkeys(args.groups)),
        token_hash=hash_token(token),
        created_at=datetime.now(UTC),
    )
    try:
        store = _open(args)
        try:
            store.add_approver(approver)
        finally:
            store.close()
    except AlreadyExistsError:
        return _fail(
            f"an approver named {args.name} exists; remove it first "
            f"(guardproxy approvers remove {args.name}) to issue a new token"
        )
    except StoreError as error:
        return _fail(str(error))
    if args.json:
        print(json.dumps({**_as_json(approver), "token": token}, indent=2))
    else:
        print(f"added approver {approver.name} (groups: {', '.join(approver.groups)})")
        print(f"token (shown once, give it to {approver.name} privately):\n  {token}")
        print(
            f"{approver.name} saves it in {approver_token_file()} (mode 600) or sets "
            "GUARDPROXY_APPROVER_TOKEN, then uses `guardproxy holds` and `guardproxy approve`."
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    try:
        store = _open(args)
        try:
            approvers = store.list_approvers()
            links = store.list_approver_links()
        finally:
            store.close()
    except StoreError as error:
        return _fail(str(error))
    theirs = {a.name: [link for link in links if link.approver == a.name] for a in approvers}
    if args.json:
        found = [_as_json(a, theirs[a.name]) for a in approvers]
        print(json.dumps({"approvers": found}, indent=2))
    elif not approvers:
        print("no approvers; add one with: guardproxy approvers add NAME --group GROUP")
    else:
        for approver in approvers:
            linked = "".join(f"  {x.kind}: {x.external_id}" for x in theirs[approver.name])
            print(f"{approver.name}  groups: {', '.join(approver.groups)}{linked}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    try:
        store = _open(args)
        try:
            store.remove_approver(args.name)
        finally:
            store.close()
    except NotFoundError:
        return _fail(f"no approver named {args.name} (guardproxy approvers list)")
    except StoreError as error:
        return _fail(str(error))
    if args.json:
        print(json.dumps({"removed": args.name}))
    else:
        print(f"removed approver {args.name}; their token no longer works")
    return 0


def cmd_link(args: argparse.Namespace) -> int:
    given = {kind: getattr(args, kind) for kind in _IDENTITIES if getattr(args, kind)}
    if not given:
        return _fail("approvers link: give --slack USER_ID, --pagerduty ID_OR_EMAIL or "
                     "--opsgenie USERNAME")  # fmt: skip
    links = []
    for kind, given_value in given.items():
        shape, example = _IDENTITIES[kind]
        value = given_value.strip()
        if not shape.match(value):
            return _fail(f"--{kind} {value!r}: expected {example}")
        identity = value.lower() if "@" in value else value
        links.append(
            ApproverLink(
                approver=args.name, kind=kind, external_id=identity, created_at=datetime.now(UTC)
            )
        )
    try:
        store = _open(args)
        try:
            for link in links:
                store.link_approver(link)
        finally:
            store.close()
    except NotFoundError:
        return _fail(f"no approver named {args.name} (guardproxy approvers list)")
    except AlreadyExistsError as error:
        return _fail(f"{error}; unlink it there first (guardproxy approvers unlink NAME --KIND)")
    except StoreError as error:
        return _fail(str(error))
    if args.json:
        print(json.dumps({"linked": args.name, **{x.kind: x.external_id for x in links}}))
    else:
        for link in links:
            print(f"linked {args.name} to {link.kind} {link.external_id}")
    return 0


def cmd_unlink(args: argparse.Namespace) -> int:
    kinds = [kind for kind in _IDENTITIES if getattr(args, kind)]
    if not kinds:
        return _fail("approvers unlink: say which: --slack, --pagerduty or --opsgenie")
    try:
        store = _open(args)
        try:
            for kind in kinds:
                store.unlink_approver(args.name, kind)
        finally:
            store.close()
    except NotFoundError as error:
        return _fail(f"{error} (guardproxy approvers list)")
    except StoreError as error:
        return _fail(str(error))
    if args.json:
        print(json.dumps({"unlinked": args.name, "kinds": kinds}))
    else:
        print(f"unlinked {args.name} from {', '.join(kinds)}")
    return 0

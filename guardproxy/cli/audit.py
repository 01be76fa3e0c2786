"""``guardproxy audit``: list, show, export and verify the tamper-evident audit trail.

Reads the store directly (no running proxy needed): the same database the proxy
writes, found in the data directory or named with ``--store``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from guardproxy.audit.trail import (
    DecisionView,
    export_lines,
    parse_time,
    record_dict,
    verify_store,
)
from guardproxy.cli.errors import UsageError
from guardproxy.cli.style import Style
from guardproxy.control.client import DEFAULT_DATA_DIR
from guardproxy.store import Store, StoreError, open_store
from guardproxy.store.chain import canonical_time


def store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="guardproxy's data directory")
    parser.add_argument(
        "--store", metavar="URL", help="database URL or path (default: the data directory's)"
    )


def open_audit_store(args: argparse.Namespace) -> Store:
    """The store named by --store, else the data directory's SQLite file (must exist)."""
    if args.store:
        target = args.store
    else:
        data_dir = Path(args.data_dir or os.environ.get("GUARDPROXY_DATA_DIR") or DEFAULT_DATA_DIR)
        database = data_dir / "guardproxy.db"
        if not database.exists():
            raise UsageError(
                f"no audit trail at {database}: pass --data-dir DIR (where guardproxy serve "
                "keeps its state) or --store URL"
            )
        target = str(database)
    try:
        return open_store(target)
    except StoreError as error:
        raise UsageError(str(error)) from error


def time_option(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text, datetime.now(UTC))
    except ValueError as error:
        raise UsageError(str(error)) from error


def add_commands(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="the audit trail: list, show, export, verify")
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    listing = commands.add_parser("list", help="recorded decisions (newest first)")
    store_options(listing)
    listing.add_argument("--session", help="only this session id")
    listing.add_argument("--outcome", help="allow, hold, deny (what was done)")
    listing.add_argument("--provider", help="aws, k8s, github, ...")
    listing.add_argument("--since", metavar="T", help="ISO time or span back (30m, 24h, 7d)")
    listing.add_argument("--until", metavar="T", help="ISO time or span back")
    listing.add_argument(
        "--kind", default="decision", help="decision (default), upstream, hold.*, or all"
    )
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="JSON lines")
    listing.set_defaults(handler=cmd_list)

    show = commands.add_parser("show", help="one record and everything recorded about it")
    store_options(show)
    show.add_argument("record_id", metavar="ID", help="a decision id (d-...) or hold id (h-...)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_show)

    export = commands.add_parser("export", help="the trail as JSON lines, with hashes")
    store_options(export)
    export.add_argument("--format", choices=["jsonl"], default="jsonl")
    export.add_argument("--since", metavar="T")
    export.add_argument("--until", metavar="T")
    export.set_defaults(handler=cmd_export)

    check = commands.add_parser(
        "verify", help="check the hash chain: edited, inserted or deleted records"
    )
    store_options(check)
    check.add_argument(
        "--head",
        metavar="SEQ:HASH",
        help="a head printed by an earlier verify, kept elsewhere: also catches a cut tail",
    )
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=cmd_verify)


def cmd_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    store = open_audit_store(args)
    try:
        records = store.list_audit(
            kind=None if args.kind == "all" else args.kind,
            session_id=args.session,
            outcome=args.outcome,
            provider=args.provider,
            since=time_option(args.since),
            until=time_option(args.until),
            limit=args.limit,
        )
    finally:
        store.close()
    if args.json:
        for record in records:
            print(json.dumps(record_dict(record), ensure_ascii=False, sort_keys=True))
        return 0
    style = Style()
    if not records:
        print("no records match")
        return 0
    for record in records:
        when = canonical_time(record.at)[:19].replace("T", " ")
        if record.kind == "decision":
            view = DecisionView.of(record)
            rules = ", ".join(view.rules) or "-"
            differs = view.shadow and view.shadow != view.decided
            shadow = f"  shadow:{view.shadow}" if differs else ""
            print(
                f"{when}  {record.record_id:<16} {style.outcome(record.outcome):<6} "
                f"{record.session_id:<18} {view.summary}  [{rules}]{shadow}"
            )
        else:
            print(
                f"{when}  {record.record_id:<16} {record.kind:<14} {record.outcome:<9} "
                f"{record.session_id:<18} {record.subject}"
            )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = open_audit_store(args)
    try:
        main = store.get_audit_record(args.record_id)
        related = store.audit_for(args.record_id)
        if main is not None and main.kind == "decision":
            hold_id = DecisionView.of(main).hold_id
            if hold_id:
                related = sorted(
                    {r.seq: r for r in (*related, *store.audit_for(hold_id))}.values(),
                    key=lambda r: r.seq,
                )
    finally:
        store.close()
    records = related or ([main] if main is not None else [])
    if not records:
        print(f"guardproxy: no audit record {args.record_id}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([record_dict(r) for r in records], indent=2, ensure_ascii=False))
        return 0
    for record in records:
        data = record_dict(record)
        print(f"#{data['seq']} {data['kind']} {data['id']} at {data['at']} ({data['outcome']})")
        print(f"  session {data['session']}  subject {data['subject']}  hash {data['hash']}")
        payload = json.dumps(data["payload"], indent=2, ensure_ascii=False)
        print("  " + payload.replace("\n", "\n  "))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    since, until = time_option(args.since), time_option(args.until)
    store = open_audit_store(args)
    try:
        for line in export_lines(store, since=since, until=until):
            sys.stdout.write(line + "\n")
    finally:
        store.close()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    expected_head: tuple[int, str] | None = None
    if args.head:
        seq_text, _, head_hash = args.head.partition(":")
        if not seq_text.isdigit() or len(head_hash) != 64:
            raise UsageError(f"--head {args.head!r}: expected SEQ:HASH as verify printed it")
        expected_head = (int(seq_text), head_hash)
    store = open_audit_store(args)
    try:
        result = verify_store(store)
        head_problem = None
        if expected_head is not None:
            seq, head_hash = expected_head
            kept = store.audit_records(after_seq=seq - 1, limit=1)
            if not kept or kept[0].seq != seq:
                head_problem = f"record #{seq} (the given head) is gone: the tail was cut"
            elif kept[0].hash != head_hash:
                head_problem = f"record #{seq} no longer has the given head hash"
    finally:
        store.close()
    problems = [str(p) for p in result.problems] + ([head_problem] if head_problem else [])
    if args.json:
        print(
            json.dumps(
                {
                    "intact": not problems,
                    "records": result.count,
                    "head": f"{result.head_seq}:{result.head_hash}",
                    "problems": problems,
                }
            )
        )
        return 0 if not problems else 1
    if problems:
        print(f"audit trail BROKEN: {len(problems)} problem(s) in {result.count} records")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"audit trail intact: {result.count} records, head {result.head_seq}:{result.head_hash}")
    return 0

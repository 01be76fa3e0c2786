"""``guardproxy audit``: list, show, export and verify the tamper-evident audit trail.

Reads the store directly (no running proxy needed): the same database the proxy
writes, found in the data directory or named with ``--store``.  ``verify`` checks every
chain and every checkpoint, with the public key of the data directory's signing key
(``audit-key``) or the keys given with ``--key``; ``checkpoint`` makes one now and
``key`` prints the public key to keep where the trail is audited from.
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
    Verification,
    export_lines,
    parse_time,
    record_dict,
    verify_store,
)
from guardproxy.cli.errors import UsageError
from guardproxy.cli.style import Style
from guardproxy.control.client import DEFAULT_DATA_DIR
from guardproxy.store import ChainHead, Store, StoreError, open_store
from guardproxy.store.chain import canonical_time


def store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="guardproxy's data directory")
    parser.add_argument(
        "--store", metavar="URL", help="database URL or path (default: the data directory's)"
    )


def data_directory(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("GUARDPROXY_DATA_DIR") or DEFAULT_DATA_DIR)


def open_audit_store(args: argparse.Namespace, *, writer: str = "") -> Store:
    """The store named by --store, else the data directory's SQLite file (must exist)."""
    if args.store:
        target = args.store
    else:
        data_dir = data_directory(args)
        database = data_dir / "guardproxy.db"
        if not database.exists():
            raise UsageError(
                f"no audit trail at {database}: pass --data-dir DIR (where guardproxy serve "
                "keeps its state) or --store URL"
            )
        target = str(database)
    try:
        return open_store(target, writer=writer)
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
        "verify",
        help="check every chain and signed checkpoint: edited, inserted, deleted records",
    )
    store_options(check)
    check.add_argument(
        "--key",
        action="append",
        type=Path,
        metavar="FILE",
        help="a public key (audit-key.pub) or signing key whose checkpoints to accept; "
        "repeat for replicas with keys of their own (default: the data directory's)",
    )
    check.add_argument(
        "--checkpointed-before",
        metavar="T",
        help="fail if a record from before T (ISO time or span back: 5m) is not bound by a "
        "checkpoint, as when checkpoints were deleted to hide a rewrite",
    )
    check.add_argument(
        "--checkpoint",
        metavar="SEQ:HASH",
        help="a checkpoint printed by an earlier verify, kept elsewhere: also catches "
        "the latest checkpoints deleted with the records they bound",
    )
    check.add_argument(
        "--head",
        action="append",
        metavar="[CHAIN:]SEQ:HASH",
        help="a chain's head printed by an earlier verify, kept elsewhere: also catches a "
        "cut tail not yet checkpointed (CHAIN 0, the chain from before there were several, "
        "if omitted)",
    )
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=cmd_verify)

    seal = commands.add_parser(
        "checkpoint", help="bind every chain's head into a signed checkpoint now"
    )
    store_options(seal)
    seal.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help="the signing key (default: the data directory's audit-key, created if missing)",
    )
    seal.set_defaults(handler=cmd_checkpoint)

    public = commands.add_parser(
        "key", help="print the public key that verifies this data directory's checkpoints"
    )
    public.add_argument("--data-dir", type=Path, metavar="DIR", help="guardproxy's data directory")
    public.add_argument("--key", type=Path, metavar="FILE", help="a key file instead")
    public.set_defaults(handler=cmd_key)


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
                    {r.record_id: r for r in (*related, *store.audit_for(hold_id))}.values(),
                    key=lambda r: r.position,
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
        print(
            f"chain {data['chain']} #{data['seq']} {data['kind']} {data['id']} at {data['at']}"
            f" ({data['outcome']})"
        )
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


def _head(text: str) -> ChainHead:
    parts = text.split(":")
    if len(parts) == 2:
        parts = ["0", *parts]
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or len(parts[2]) != 64:
        raise UsageError(f"--head {text!r}: expected CHAIN:SEQ:HASH as verify printed it")
    return ChainHead(int(parts[0]), int(parts[1]), parts[2])


def _kept_checkpoint(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise UsageError(f"--checkpoint {text!r}: expected SEQ:HASH as verify printed it")
    return int(seq), digest


def _verify_keys(args: argparse.Namespace) -> list[Any]:
    """The keys given with --key, else the data directory's (none if it has none)."""
    from guardproxy.audit.checkpoint import (  # noqa: PLC0415 - cryptography loads for keys only
        KEY_FILE,
        AuditKeyError,
        load_verify_key,
        public_key_path,
    )

    paths: list[Path] = list(args.key or [])
    if not paths:
        default = data_directory(args) / KEY_FILE
        for candidate in (default, public_key_path(default)):
            if candidate.exists():
                paths = [candidate]
                break
    try:
        return [load_verify_key(path) for path in paths]
    except AuditKeyError as error:
        raise UsageError(str(error)) from error


def cmd_verify(args: argparse.Namespace) -> int:
    kept_heads = [_head(text) for text in args.head or []]
    kept_checkpoint = _kept_checkpoint(args.checkpoint)
    before = time_option(args.checkpointed_before)
    keys = _verify_keys(args)
    store = open_audit_store(args)
    try:
        result = verify_store(
            store,
            keys,
            checkpointed_before=before,
            kept_heads=kept_heads,
            kept_checkpoint=kept_checkpoint,
        )
    finally:
        store.close()
    last = result.last_checkpoint
    if args.json:
        first = result.first_broken_record
        print(
            json.dumps(
                {
                    "intact": result.intact,
                    "records": result.records,
                    "chains": [c.as_dict() for c in result.chains.values()],
                    "checkpoints": result.checkpoints,
                    "last_checkpoint": None if last is None else f"{last.seq}:{last.hash}",
                    "not_yet_checkpointed": result.unchecked,
                    "signatures_checked": result.signatures_checked,
                    "signed_by": list(result.key_ids),
                    "first_broken_record": None if first is None else str(first),
                    "problems": result.problems,
                }
            )
        )
        return 0 if result.intact else 1
    for line in verify_lines(result):
        print(line)
    return 0 if result.intact else 1


def verify_lines(result: Verification) -> list[str]:
    """``audit verify``'s report: the verdict first, naming the first break."""
    chains = f"{result.records} records in {len(result.chains)} chain(s)"
    checkpoints = f"{result.checkpoints} checkpoint(s)"
    if result.intact:
        lines = [f"audit trail intact: {chains}, {checkpoints}"]
    else:
        first = result.first_broken_record
        where = str(first) if first is not None else str(result.checkpoint_problems[0])
        lines = [
            f"audit trail BROKEN at {where}",
            f"  {len(result.problems)} problem(s) in {chains}, {checkpoints}:",
            *(f"    {problem}" for problem in result.problems),
        ]
    last = result.last_checkpoint
    if last is not None:
        lines.append(f"  last checkpoint {last.seq}:{last.hash} at {canonical_time(last.at)}")
    if result.signatures_checked:
        if result.checkpoints:
            lines.append(f"  checkpoint signatures checked (key {', '.join(result.key_ids)})")
        else:
            lines.append("  no checkpoint yet: nothing binds the trail to the key")
    elif result.checkpoints:
        lines.append(
            "  checkpoint signatures NOT checked: no key (pass --key FILE: the audit-key.pub "
            "of the data directory that signed them)"
        )
    unchecked = [c for c in result.chains.values() if c.unchecked]
    if unchecked:
        spans = ", ".join(
            f"chain {c.id} from #{c.checkpointed_seq + 1}"
            + (f" ({canonical_time(c.unchecked_at)})" if c.unchecked_at else "")
            for c in unchecked
        )
        lines.append(f"  not yet checkpointed: {result.unchecked} record(s): {spans}")
    for summary in result.chains.values():
        writer = f" ({summary.writer})" if summary.writer else ""
        lines.append(
            f"  chain {summary.id}{writer}: {summary.records} records, head "
            f"{summary.id}:{summary.head_seq}:{summary.head_hash}"
        )
    return lines


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from guardproxy.audit.checkpoint import (  # noqa: PLC0415 - cryptography loads for keys only
        KEY_FILE,
        AuditKeyError,
        load_or_create_signing_key,
        load_signing_key,
    )

    try:
        key = (
            load_signing_key(args.key)
            if args.key
            else load_or_create_signing_key(data_directory(args) / KEY_FILE)
        )
    except AuditKeyError as error:
        raise UsageError(str(error)) from error
    store = open_audit_store(args, writer="audit checkpoint")
    try:
        made = store.checkpoint_audit(at=datetime.now(UTC), key_id=key.key_id, sign=key.sign)
    except StoreError as error:
        raise UsageError(str(error)) from error
    finally:
        store.close()
    if made is None:
        print("nothing to checkpoint: no chain moved since the last checkpoint")
        return 0
    print(
        f"checkpoint {made.seq}:{made.hash} binds {len(made.heads)} chain head(s), "
        f"signed by key {made.key_id}"
    )
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    from guardproxy.audit.checkpoint import (  # noqa: PLC0415 - cryptography loads for keys only
        KEY_FILE,
        AuditKeyError,
        load_verify_key,
    )

    path = args.key or data_directory(args) / KEY_FILE
    try:
        key = load_verify_key(path)
    except AuditKeyError as error:
        raise UsageError(str(error)) from error
    print(key.line())
    return 0

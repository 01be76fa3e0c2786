"""Editing a store's database behind guardproxy's back, as an intruder with write access
to it would: plain SQL on SQLite or PostgreSQL, and the hashes recomputed where a
careful intruder would recompute them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from guardproxy.store import AuditRecord, open_store
from guardproxy.store.chain import GENESIS, checkpoint_hash, record_hash


def execute(url: str, statement: str, parameters: Sequence[Any] = ()) -> None:
    """One statement (``?`` placeholders) in a transaction of its own."""
    if url.startswith("sqlite:"):
        with sqlite3.connect(Path(url.removeprefix("sqlite://"))) as db:
            db.execute(statement, parameters)
        db.close()
    else:
        with psycopg.connect(url) as connection:
            connection.execute(statement.replace("?", "%s"), parameters)


def rows(url: str, query: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite:"):
        db = sqlite3.connect(Path(url.removeprefix("sqlite://")))
        try:
            return db.execute(query, parameters).fetchall()
        finally:
            db.close()
    with psycopg.connect(url) as connection:
        return connection.execute(query.replace("?", "%s"), parameters).fetchall()


def records_of(url: str) -> list[AuditRecord]:
    store = open_store(url)
    try:
        return store.audit_records(limit=100_000)
    finally:
        store.close()


def rewrite_outcome(
    url: str,
    record_id: str,
    outcome: str,
    *,
    chain_too: bool = True,
    checkpoints_too: bool = True,
    sign: Any = None,
) -> None:
    """Change a decision's outcome (column and payload) and recompute its hash;
    ``chain_too``: also every later hash and link of its chain and the chain's head;
    ``checkpoints_too``: also every checkpoint binding that chain, their hashes and links
    (the signatures are kept, or made with ``sign``: the intruder's own key)."""
    records = records_of(url)
    (target,) = [r for r in records if r.record_id == record_id]
    later = [r for r in records if r.chain == target.chain and r.seq >= target.seq]
    prev = target.prev_hash
    new_hashes: dict[int, str] = {}
    for record in later if chain_too else [target]:
        payload = record.payload_json
        if record.record_id == record_id:
            data = json.loads(payload)
            data["outcome"] = outcome
            data["decision"]["outcome"] = outcome
            payload = json.dumps(data, separators=(",", ":"))
        from dataclasses import replace  # noqa: PLC0415

        edited = replace(
            record,
            payload_json=payload,
            outcome=outcome if record.record_id == record_id else record.outcome,
            prev_hash=prev,
        )
        digest = record_hash(edited, edited.seq, edited.prev_hash)
        execute(
            url,
            "UPDATE audit_log SET payload = ?, outcome = ?, prev_hash = ?, hash = ?"
            " WHERE chain = ? AND seq = ?",
            (edited.payload_json, edited.outcome, edited.prev_hash, digest, edited.chain,
             edited.seq),
        )  # fmt: skip
        new_hashes[record.seq] = digest
        prev = digest
    if not chain_too:
        return
    execute(
        url,
        "UPDATE audit_chains SET head_hash = ? WHERE id = ? AND head_seq = ?",
        (prev, target.chain, later[-1].seq),
    )
    if not checkpoints_too:
        return
    for seq, digest in new_hashes.items():
        execute(
            url,
            "UPDATE audit_checkpoint_heads SET hash = ? WHERE chain = ? AND seq = ?",
            (digest, target.chain, seq),
        )
    store = open_store(url)
    try:
        checkpoints = store.audit_checkpoints(limit=100_000)
    finally:
        store.close()
    prev = GENESIS
    for checkpoint in checkpoints:
        key_id = checkpoint.key_id if sign is None else sign.key_id
        digest = checkpoint_hash(
            seq=checkpoint.seq, at=checkpoint.at, heads=checkpoint.heads, key_id=key_id,
            prev_hash=prev,
        )  # fmt: skip
        signature = checkpoint.signature if sign is None else sign.sign(digest)
        execute(
            url,
            "UPDATE audit_checkpoints SET prev_hash = ?, hash = ?, key_id = ?, signature = ?"
            " WHERE seq = ?",
            (prev, digest, key_id, signature, checkpoint.seq),
        )
        prev = digest

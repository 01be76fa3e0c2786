"""Several audit chains in one database: one per writer, and the checkpoints binding them.

Every test runs on SQLite and on PostgreSQL (the ``store`` fixtures).  Writers are
stores opened separately, as the proxy, its decision writer process and other replicas
open theirs: in threads here, and in processes of their own.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from guardproxy.store import (
    AlreadyExistsError,
    AuditRecord,
    ChainHead,
    DecisionRecord,
    HoldState,
    Store,
    StoreError,
    open_store,
)
from guardproxy.store.chain import (
    GENESIS,
    LEGACY_CHAIN,
    chain_genesis,
    checkpoint_hash,
    decision_entry,
    link,
    verify,
)
from guardproxy.store.migrations import MIGRATIONS, SCHEMA_VERSION_TABLE
from guardproxy.store.postgres import migrate
from guardproxy.store.postgres_migrations import MIGRATIONS as POSTGRES_MIGRATIONS
from guardproxy.store.sql import SqlStore, apply_migrations

from .conftest import OpenStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SEC = timedelta(seconds=1)


def _decision(decision_id: str, at: datetime = T0) -> DecisionRecord:
    return DecisionRecord(
        id=decision_id, at=at, session_id="s-1", action_json='{"provider":"k8s"}',
        context_json="{}", decision_json='{"outcome":"allow"}', outcome="allow",
        provider="k8s",
    )  # fmt: skip


def _all(store: Store) -> list[AuditRecord]:
    return store.audit_records(limit=100_000)


def _by_chain(records: list[AuditRecord]) -> dict[int, list[AuditRecord]]:
    chains: dict[int, list[AuditRecord]] = {}
    for record in records:
        chains.setdefault(record.chain, []).append(record)
    return chains


def _sign(digest: str) -> str:
    """A stand-in signature (the real key is tested in tests/audit)."""
    return "signed:" + digest


def test_each_store_appends_to_a_chain_of_its_own(open_store_again: OpenStore) -> None:
    proxy, writer = open_store_again(), open_store_again()
    for i in range(3):
        proxy.append_decision(_decision(f"d-proxy-{i}"))
        writer.append_decisions([_decision(f"d-writer-{i}-{n}") for n in range(2)])
    records = _all(proxy)
    chains = _by_chain(records)
    assert len(chains) == 2 and LEGACY_CHAIN not in chains
    assert sorted(len(each) for each in chains.values()) == [3, 6]
    for chain, each in chains.items():
        assert [r.seq for r in each] == list(range(1, len(each) + 1))
        assert each[0].prev_hash == chain_genesis(chain)
        assert len({r.record_id.split("-")[1] for r in each}) == 1  # one writer's records
    assert [r.position for r in records] == sorted(r.position for r in records)
    assert [r.record_id for r in records][:3] == ["d-proxy-0", "d-writer-0-0", "d-writer-0-1"]
    assert verify(records) == []
    listed = proxy.audit_chains()
    assert [(c.id, c.head_seq) for c in listed] == sorted(
        (chain, len(each)) for chain, each in chains.items()
    )
    assert all(c.head_hash == chains[c.id][-1].hash for c in listed)
    assert all(c.writer.startswith(f"{socket.gethostname()} pid {os.getpid()}") for c in listed)


def test_a_store_opens_its_chain_at_its_first_append_only(
    store_url: str, open_store_again: OpenStore
) -> None:
    reader = open_store_again()
    reader.list_audit()
    reader.expire_holds(T0)  # a write that could have appended, and had nothing to
    assert [c.head_seq for c in reader.audit_chains()] in ([], [0])
    named = open_store(store_url, writer="decision writer")
    try:
        named.append_decision(_decision("d-1"))
        chain = named.audit_chains()[-1]
        assert chain.writer.endswith(" decision writer") and chain.head_seq == 1
    finally:
        named.close()


def test_hold_events_and_decisions_of_one_store_share_its_chain(store: Store) -> None:
    hold = store.create_hold(
        session_id="s-1", request_digest="dg", action_json="{}", decision_json="{}",
        summary="k8s delete", grant="once", created_at=T0, expires_at=T0 + 60 * SEC,
    )  # fmt: skip
    store.append_decision(_decision("d-1"))
    store.resolve_hold(hold.id, state=HoldState.APPROVED, by="alice", reason="", now=T0 + SEC)
    store.set_upstream_statuses([("d-1", 201)])
    records = _all(store)
    assert [(r.kind, r.seq) for r in records] == [
        ("hold.created", 1),
        ("decision", 2),
        ("hold.approved", 3),
        ("upstream", 4),
    ]
    assert len({r.chain for r in records}) == 1 and verify(records) == []


def test_writers_in_threads_interleave_without_forking(open_store_again: OpenStore) -> None:
    writers, per_writer = 4, 30
    stores = [open_store_again() for _ in range(writers)]
    barrier = threading.Barrier(writers * 2)

    def append(worker: int) -> None:
        store = stores[worker % writers]  # two threads per store: its appends serialise
        barrier.wait()
        for i in range(per_writer):
            if i % 10 == 9:
                store.create_hold(
                    session_id="s", request_digest=f"dg-{worker}-{i}", action_json="{}",
                    decision_json="{}", summary="x", grant="once", created_at=T0,
                    expires_at=T0 + SEC,
                )  # fmt: skip
            elif i % 10 == 5:
                store.append_decisions([_decision(f"d-{worker}-{i}-{n}") for n in range(3)])
            else:
                store.append_decision(_decision(f"d-{worker}-{i}"))

    with ThreadPoolExecutor(writers * 2) as pool:
        list(pool.map(append, range(writers * 2)))
    records = _all(stores[0])
    chains = _by_chain(records)
    assert len(chains) == writers
    for each in chains.values():
        assert [r.seq for r in each] == list(range(1, len(each) + 1))
    assert len(records) == writers * 2 * (per_writer + 6)
    assert verify(records) == []


_PROCESS_WRITER = """
import sys
from datetime import UTC, datetime
from guardproxy.store import DecisionRecord, open_store
store = open_store(sys.argv[1], writer=sys.argv[2])
for i in range(int(sys.argv[3])):
    store.append_decision(DecisionRecord(
        id=f"d-{sys.argv[2]}-{i}", at=datetime.now(UTC), session_id=sys.argv[2],
        action_json="{}", context_json="{}", decision_json="{}", outcome="allow"))
    if i % 7 == 0:
        store.set_upstream_statuses([(f"d-{sys.argv[2]}-{i}", 200)])
store.close()
"""


def test_writer_processes_interleave_without_forking(
    store_url: str, open_store_again: OpenStore
) -> None:
    """Processes, as replicas and their decision writers are, appending at once."""
    store = open_store_again()
    store.append_decision(_decision("d-here"))  # and this process's store, meanwhile
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    processes = [
        subprocess.Popen([sys.executable, "-c", _PROCESS_WRITER, store_url, f"p{n}", "40"], env=env)
        for n in range(3)
    ]
    for i in range(40):
        store.append_decision(_decision(f"d-here-{i}"))
    assert [process.wait(60) for process in processes] == [0, 0, 0]
    records = _all(store)
    chains = _by_chain(records)
    assert len(chains) == 4
    writers = {c.id: c.writer for c in store.audit_chains()}
    for chain, each in chains.items():
        assert [r.seq for r in each] == list(range(1, len(each) + 1))
        sessions = {r.session_id for r in each}
        if sessions == {"s-1"}:
            assert len(each) == 41
        else:
            (session,) = sessions
            assert writers[chain].endswith(f" {session}") and len(each) == 46
    assert verify(records) == []


def test_a_failed_append_leaves_every_chain_linkable(open_store_again: OpenStore) -> None:
    first, second = open_store_again(), open_store_again()
    first.append_decision(_decision("d-1"))
    with pytest.raises(AlreadyExistsError):
        first.append_decisions([_decision("d-2"), _decision("d-1")])
    with pytest.raises(AlreadyExistsError):  # the same id from another writer
        second.append_decision(_decision("d-1"))
    first.append_decision(_decision("d-2"))
    second.append_decision(_decision("d-3"))
    records = _all(first)
    assert [(r.record_id, r.seq) for r in records] == [("d-1", 1), ("d-2", 2), ("d-3", 1)]
    assert verify(records) == []


def test_two_writers_on_one_chain_cannot_fork_it(open_store_again: OpenStore) -> None:
    """A chain belongs to the store that opened it; should a second writer append to it
    anyway, the second record of a sequence number is refused, and the writer that was
    refused reads the head again and continues the chain."""
    owner, intruder = open_store_again(), open_store_again()
    owner.append_decision(_decision("d-1"))
    intruder.append_decision(_decision("d-other"))  # opens its own chain...
    assert isinstance(owner, SqlStore) and isinstance(intruder, SqlStore)
    intruder._chain_id, intruder._chain_head = owner._chain_id, (0, GENESIS)  # ...swapped
    with pytest.raises(StoreError, match=r"audit chain \d+ \(another writer appended"):
        intruder.append_decision(_decision("d-fork"))  # seq 1 of the owner's chain is taken
    intruder.append_decision(_decision("d-2"))  # the head read again: #2
    with pytest.raises(StoreError):  # the owner's remembered head is #1: refused...
        owner.append_decision(_decision("d-3"))
    records = _all(owner)
    assert "d-fork" not in {r.record_id for r in records}
    owner.append_decision(_decision("d-3"))  # ...then read again: #3
    chain = [r for r in _all(owner) if r.chain == owner._chain_id]
    assert [(r.record_id, r.seq) for r in chain] == [("d-1", 1), ("d-2", 2), ("d-3", 3)]
    assert verify(_all(owner)) == []


def test_a_checkpoint_binds_the_heads_of_the_chains_that_moved(
    open_store_again: OpenStore,
) -> None:
    first, second = open_store_again(), open_store_again()
    assert first.checkpoint_audit(at=T0, key_id="k1", sign=_sign) is None  # nothing yet
    first.append_decisions([_decision("d-1"), _decision("d-2")])
    second.append_decision(_decision("d-3"))
    one = first.checkpoint_audit(at=T0, key_id="k1", sign=_sign)
    assert one is not None and one.seq == 1 and one.prev_hash == GENESIS
    heads = {r.chain: r for r in _all(first)}
    assert one.heads == tuple(
        ChainHead(chain, record.seq, record.hash) for chain, record in sorted(heads.items())
    )
    assert one.signature == "signed:" + one.hash
    assert one.hash == checkpoint_hash(
        seq=1, at=T0, heads=one.heads, key_id="k1", prev_hash=GENESIS
    )
    assert first.checkpoint_audit(at=T0 + SEC, key_id="k1", sign=_sign) is None  # no move
    second.append_decision(_decision("d-4"))
    soon = T0 + 5 * SEC
    assert (
        first.checkpoint_audit(at=soon, key_id="k1", sign=_sign, min_interval=10 * SEC)
        is None  # another replica made one less than min_interval ago
    )
    two = second.checkpoint_audit(at=T0 + 11 * SEC, key_id="k2", sign=_sign, min_interval=10 * SEC)
    assert two is not None and two.seq == 2 and two.prev_hash == one.hash
    (moved,) = two.heads
    assert (moved.chain, moved.seq) == (second.audit_chains()[1].id, 2)
    assert second.audit_checkpoints() == [one, two]
    assert second.audit_checkpoints(after_seq=1) == [two]
    assert second.audit_checkpoints(after_seq=2) == []


def test_checkpoints_from_several_replicas_form_one_sequence(
    open_store_again: OpenStore,
) -> None:
    stores = [open_store_again() for _ in range(4)]
    barrier = threading.Barrier(len(stores))

    def work(i: int) -> int:
        store, made = stores[i], 0
        barrier.wait()
        for n in range(15):
            store.append_decision(_decision(f"d-{i}-{n}"))
            if store.checkpoint_audit(at=T0 + n * SEC, key_id=f"k{i}", sign=_sign):
                made += 1
        return made

    with ThreadPoolExecutor(len(stores)) as pool:
        made = sum(pool.map(work, range(len(stores))))
    checkpoints = stores[0].audit_checkpoints()
    assert [c.seq for c in checkpoints] == list(range(1, made + 1))
    prev = GENESIS
    bound: dict[int, int] = {}
    for checkpoint in checkpoints:
        assert checkpoint.prev_hash == prev
        assert checkpoint.hash == checkpoint_hash(
            seq=checkpoint.seq, at=checkpoint.at, heads=checkpoint.heads,
            key_id=checkpoint.key_id, prev_hash=prev,
        )  # fmt: skip
        for head in checkpoint.heads:
            assert head.seq > bound.get(head.chain, 0)  # a head only moves forward
            bound[head.chain] = head.seq
        prev = checkpoint.hash
    records = {(r.chain, r.seq): r.hash for r in _all(stores[0])}
    assert all(records[(c, s)] for c, s in bound.items())


def _legacy_database(store_url: str, tmp_path: Path) -> list[AuditRecord]:
    """A database at schema version 5 (one chain, before migration 7) holding three
    records linked as guardproxy linked them then; the records."""
    records, prev = [], GENESIS
    for seq in range(1, 4):
        record = link(decision_entry(_decision(f"d-old-{seq}", T0 + seq * SEC)), seq, prev)
        records.append(record)
        prev = record.hash
    rows = [
        (r.seq, r.record_id, r.kind, r.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), r.session_id,
         r.subject, r.outcome, r.provider, r.payload_json, r.prev_hash, r.hash)
        for r in records
    ]  # fmt: skip
    insert = (
        "INSERT INTO audit_log (seq, record_id, kind, at, session_id, subject, outcome,"
        " provider, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    if store_url.startswith("sqlite:"):
        path = Path(store_url.removeprefix("sqlite://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("BEGIN")
            db.execute(SCHEMA_VERSION_TABLE)
            apply_migrations(db, 0, MIGRATIONS[:5])
            db.executemany(insert, rows)
            db.execute("COMMIT")
        finally:
            db.close()
    else:
        with psycopg.connect(store_url, autocommit=True, row_factory=dict_row) as connection:
            migrate(connection, POSTGRES_MIGRATIONS[:5])
            with connection.cursor() as cursor:
                cursor.executemany(insert.replace("?", "%s"), rows)
    return records


def test_the_single_chain_of_an_older_database_becomes_chain_0_unchanged(
    store_url: str, tmp_path: Path
) -> None:
    legacy = _legacy_database(store_url, tmp_path)
    store = open_store(store_url)
    try:
        migrated = _all(store)
        assert migrated == [replace(r, position=n) for n, r in enumerate(legacy, start=1)]
        assert {r.chain for r in migrated} == {LEGACY_CHAIN}
        (chain,) = store.audit_chains()
        assert (chain.id, chain.head_seq, chain.head_hash) == (0, 3, legacy[-1].hash)
        assert "legacy" in chain.writer
        store.append_decision(_decision("d-new"))
        records = _all(store)
        assert records[-1].chain not in (LEGACY_CHAIN, None) and records[-1].seq == 1
        assert verify(records) == []
        checkpoint = store.checkpoint_audit(at=T0, key_id="k", sign=_sign)
        assert checkpoint is not None
        assert [(h.chain, h.seq) for h in checkpoint.heads] == [(0, 3), (records[-1].chain, 1)]
        decision = store.get_decision("d-old-1")
        assert decision is None  # the decisions table never had them: only the chain did
        assert json.loads(records[0].payload_json)["outcome"] == "allow"
    finally:
        store.close()


def test_concurrent_appends_of_one_store_are_written_together_each_failing_alone(
    store: Store,
) -> None:
    """The proxy's threads append mutations' records at once: whoever gets the chain
    writes all that wait, in one transaction; an append that cannot be written (its id
    is taken) fails its caller only, and every other one is written."""
    store.append_decision(_decision("d-taken"))
    threads, per_thread = 8, 12
    barrier = threading.Barrier(threads)
    failures: list[str] = []

    def append(worker: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            name = "d-taken" if (worker, i) == (3, 5) else f"d-{worker}-{i}"
            try:
                store.append_decision(_decision(name))
            except AlreadyExistsError as error:
                failures.append(str(error))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(append, range(threads)))
    assert failures == ["decision d-taken already exists"]
    records = _all(store)
    assert len(records) == 1 + threads * per_thread - 1
    assert len({r.record_id for r in records}) == len(records)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert verify(records) == []
    assert store.audit_chains()[-1].head_seq == len(records)

"""``audit verify`` against an intruder with write access to the database, on SQLite and
on PostgreSQL: records edited, deleted, inserted or reordered in one chain, and the
whole database rewritten consistently (every hash, link and head recomputed, even the
checkpoints'), which only the checkpoints' signatures, made with a key kept outside the
database, expose.

The trail is two writers' chains (a replica's proxy and its decision writer process),
decisions, a hold's events and upstream statuses, two signed checkpoints and a few
records appended since.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from guardproxy.audit.checkpoint import SigningKey, load_or_create_signing_key
from guardproxy.audit.trail import Verification, verify_store
from guardproxy.cli.main import main
from guardproxy.store import DecisionRecord, HoldState, Store, open_store

from .tampering import execute, records_of, rewrite_outcome, rows

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
Capsys = pytest.CaptureFixture[str]


def _decision(decision_id: str, n: int, outcome: str = "allow") -> DecisionRecord:
    return DecisionRecord(
        id=decision_id, at=T0 + n * MIN, session_id="s-alice",
        action_json='{"provider":"k8s","operation":"delete"}', context_json="{}",
        decision_json=f'{{"outcome":"{outcome}"}}', outcome=outcome, provider="k8s",
    )  # fmt: skip


@dataclass
class Trail:
    url: str
    key: SigningKey
    key_file: Path
    public_file: Path
    proxy_chain: int
    writer_chain: int

    def verify(self, *keys: SigningKey, **options: object) -> Verification:
        store = open_store(self.url)
        try:
            return verify_store(store, [k.verify_key for k in keys], **options)  # type: ignore[arg-type]
        finally:
            store.close()


def _checkpoint(store: Store, key: SigningKey, at: datetime) -> None:
    assert store.checkpoint_audit(at=at, key_id=key.key_id, sign=key.sign) is not None


@pytest.fixture(params=["sqlite", "postgres"])
def trail(request: pytest.FixtureRequest, tmp_path: Path) -> Trail:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'guardproxy.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    key_file = tmp_path / "keys" / "audit-key"
    key = load_or_create_signing_key(key_file)
    proxy, writer = open_store(url, writer="proxy"), open_store(url, writer="decision writer")
    try:
        proxy.append_decision(_decision("d-p1", 1, "deny"))
        writer.append_decisions([_decision(f"d-w{n}", n) for n in range(1, 4)])
        hold = proxy.create_hold(
            session_id="s-alice", request_digest="dg", action_json="{}",
            decision_json='{"outcome":"hold"}', summary="k8s delete prod", grant="once",
            created_at=T0 + 2 * MIN, expires_at=T0 + 30 * MIN,
        )  # fmt: skip
        proxy.append_decision(_decision("d-p2", 2, "hold"))
        _checkpoint(proxy, key, T0 + 3 * MIN)
        proxy.resolve_hold(
            hold.id, state=HoldState.APPROVED, by="carol", reason="ok", now=T0 + 4 * MIN
        )
        writer.append_decisions([_decision(f"d-w{n}", n) for n in range(4, 7)])
        writer.set_upstream_statuses([("d-w1", 200), ("d-w4", 200)])
        proxy.append_decision(_decision("d-p3", 5))
        _checkpoint(writer, key, T0 + 6 * MIN)
        proxy.append_decision(_decision("d-p4", 7))  # not yet checkpointed
        writer.append_decisions([_decision("d-w7", 7)])
        assert proxy._chain_id is not None and writer._chain_id is not None  # type: ignore[attr-defined]
        chains = (proxy._chain_id, writer._chain_id)  # type: ignore[attr-defined]
    finally:
        proxy.close()
        writer.close()
    public = key_file.with_name("audit-key.pub")
    return Trail(url, key, key_file, public, *chains)


def _seq(trail: Trail, record_id: str) -> tuple[int, int]:
    (record,) = [r for r in records_of(trail.url) if r.record_id == record_id]
    return record.chain, record.seq


def test_an_untouched_trail_verifies_every_chain_and_signed_checkpoint(trail: Trail) -> None:
    result = trail.verify(trail.key)
    assert result.intact, result.problems
    assert result.records == 15
    assert sorted(result.chains) == sorted((trail.proxy_chain, trail.writer_chain))
    proxy, writer = result.chains[trail.proxy_chain], result.chains[trail.writer_chain]
    assert (proxy.records, proxy.checkpointed_seq, proxy.unchecked) == (6, 5, 1)
    assert (writer.records, writer.checkpointed_seq, writer.unchecked) == (9, 8, 1)
    assert proxy.writer.endswith(" proxy") and writer.writer.endswith(" decision writer")
    assert result.checkpoints == 2 and result.signatures_checked
    assert result.key_ids == (trail.key.key_id,)
    assert result.unchecked == 2


def test_verify_on_the_command_line(trail: Trail, capsys: Capsys) -> None:
    code = main(["audit", "verify", "--store", trail.url, "--key", str(trail.public_file)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("audit trail intact: 15 records in 2 chain(s), 2 checkpoint(s)\n")
    assert f"checkpoint signatures checked (key {trail.key.key_id})" in out
    assert re.search(r"last checkpoint 2:[0-9a-f]{64} at 2026-11-25T09:06:00.000000Z", out)
    assert (
        f"not yet checkpointed: 2 record(s): chain {trail.proxy_chain} from #6 "
        f"(2026-11-25T09:07:00.000000Z), chain {trail.writer_chain} from #9" in out
    )


@pytest.mark.parametrize(
    ("tampering", "record_id", "problem"),
    [
        ("edit", "d-p2", "its content does not match its hash (edited)"),
        ("delete", "d-w2", "record #2 is missing"),
        ("insert", "d-forged", "its content does not match its hash (edited)"),
        ("reorder", "d-w3", "does not follow the previous record"),
    ],
)
def test_tampering_in_one_chain_names_the_first_broken_record(
    trail: Trail, capsys: Capsys, tampering: str, record_id: str, problem: str
) -> None:
    if tampering == "edit":
        execute(trail.url, "UPDATE audit_log SET outcome = 'allow' WHERE record_id = 'd-p2'")
        where = _seq(trail, "d-p2")
    elif tampering == "delete":
        execute(trail.url, "DELETE FROM audit_log WHERE record_id = 'd-w2'")
        where = (trail.writer_chain, 3)
        record_id = "d-w3"  # the record after the gap is named
    elif tampering == "insert":  # a record slipped in, the later ones renumbered
        chain = trail.proxy_chain
        for statement in (
            "UPDATE audit_log SET seq = seq + 1000 WHERE chain = ? AND seq >= 2",
            "UPDATE audit_log SET seq = seq - 999 WHERE chain = ? AND seq >= 1002",
        ):
            execute(trail.url, statement, (chain,))
        execute(
            trail.url,
            "INSERT INTO audit_log (chain, seq, record_id, kind, at, session_id, subject,"
            " outcome, provider, payload, prev_hash, hash) SELECT chain, 2, 'd-forged', kind,"
            " at, session_id, 'd-forged', 'allow', provider, payload, prev_hash, hash"
            " FROM audit_log WHERE chain = ? AND seq = 3",
            (chain,),
        )
        where = (chain, 2)
    else:  # two records swap places in their chain
        chain = trail.writer_chain
        execute(trail.url, "UPDATE audit_log SET seq = 0 - seq WHERE chain = ? AND seq IN (2, 3)",
                (chain,))  # fmt: skip
        execute(trail.url, "UPDATE audit_log SET seq = 5 + seq WHERE chain = ? AND seq < 0",
                (chain,))  # fmt: skip
        where = (chain, 2)
    result = trail.verify(trail.key)
    first = result.first_broken_record
    assert first is not None
    assert (first.chain, first.seq, first.record_id) == (*where, record_id)
    assert problem in first.problem
    other = trail.writer_chain if where[0] == trail.proxy_chain else trail.proxy_chain
    assert all(p.chain != other for p in result.record_problems)  # the other chain is fine
    assert main(["audit", "verify", "--store", trail.url, "--key", str(trail.key_file)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(
        f"audit trail BROKEN at chain {where[0]} record #{where[1]} ({record_id}): {problem}"
    )


def test_a_consistent_rewrite_of_the_whole_database_fails_the_signatures(
    trail: Trail, capsys: Capsys
) -> None:
    """Every hash after the edit, the chain's head, the checkpoints' heads, hashes and
    links recomputed: the chains verify, the checkpoints' hashes match, and only the
    signatures, which need the key that is not in the database, say it."""
    rewrite_outcome(trail.url, "d-p1", "allow")
    unkeyed = trail.verify()
    assert unkeyed.intact and not unkeyed.signatures_checked  # without the key it passes...
    assert main(["audit", "verify", "--store", trail.url]) == 0
    assert "checkpoint signatures NOT checked: no key" in capsys.readouterr().out
    result = trail.verify(trail.key)  # ...with it, it does not
    assert not result.intact and result.record_problems == []
    assert [str(p) for p in result.checkpoint_problems] == [
        f"checkpoint #{n}: its signature does not verify with key {trail.key.key_id}: the "
        "checkpoint was rewritten or forged"
        for n in (1, 2)
    ]
    assert main(["audit", "verify", "--store", trail.url, "--key", str(trail.public_file)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("audit trail BROKEN at checkpoint #1: its signature does not verify")


def test_a_rewrite_signed_with_another_key_is_refused(trail: Trail, tmp_path: Path) -> None:
    intruder = load_or_create_signing_key(tmp_path / "intruder" / "audit-key")
    rewrite_outcome(trail.url, "d-p1", "allow", sign=intruder)
    result = trail.verify(trail.key)
    assert [str(p) for p in result.checkpoint_problems] == [
        f"checkpoint #{n}: signed by key {intruder.key_id}, which is not a given key "
        f"({trail.key.key_id}): pass its public key with --key, or it was not signed by "
        "guardproxy"
        for n in (1, 2)
    ]
    assert trail.verify(intruder).intact  # what the intruder's own key says


def test_a_rewrite_that_leaves_the_checkpoints_is_named_at_the_record(trail: Trail) -> None:
    rewrite_outcome(trail.url, "d-p1", "allow", checkpoints_too=False)
    result = trail.verify(trail.key)
    assert result.checkpoint_problems == []
    first = result.first_broken_record
    assert first is not None and (first.record_id, first.seq) == ("d-p2", 3)
    assert first.problem == (
        "is not the record checkpoint #1 signed (rewritten after it, with the hashes after it "
        "recomputed)"
    )


def test_a_key_mismatch_is_a_problem(trail: Trail, tmp_path: Path, capsys: Capsys) -> None:
    other = load_or_create_signing_key(tmp_path / "other" / "audit-key")
    result = trail.verify(other)
    assert len(result.checkpoint_problems) == 2
    assert f"signed by key {trail.key.key_id}, which is not a given key" in str(
        result.checkpoint_problems[0]
    )
    public = tmp_path / "other" / "audit-key.pub"
    assert main(["audit", "verify", "--store", trail.url, "--key", str(public)]) == 1
    assert "which is not a given key" in capsys.readouterr().out
    both = ["--key", str(public), "--key", str(trail.public_file)]
    assert main(["audit", "verify", "--store", trail.url, *both]) == 0  # replicas' keys


def test_a_deleted_checkpoint_breaks_the_checkpoints(trail: Trail) -> None:
    execute(trail.url, "DELETE FROM audit_checkpoint_heads WHERE checkpoint = 1")
    execute(trail.url, "DELETE FROM audit_checkpoints WHERE seq = 1")
    result = trail.verify(trail.key)
    assert [str(p) for p in result.checkpoint_problems] == [
        "checkpoint #2: checkpoint #1 is missing",
        "checkpoint #2: does not follow the previous checkpoint (deleted, inserted or rewritten)",
    ]


def test_a_cut_tail_of_checkpointed_records_is_caught(trail: Trail) -> None:
    chain = trail.writer_chain
    execute(trail.url, "DELETE FROM audit_log WHERE chain = ? AND seq >= 7", (chain,))
    (last,) = rows(trail.url, "SELECT hash FROM audit_log WHERE chain = ? AND seq = 6", (chain,))
    execute(
        trail.url,
        "UPDATE audit_chains SET head_seq = 6, head_hash = ? WHERE id = ?",
        (last[0], chain),
    )
    result = trail.verify(trail.key)
    assert [str(p) for p in result.record_problems] == [
        f"chain {chain} record #8: is gone, but checkpoint #2 bound it: the chain ends at #6 "
        "(its tail was cut, or the chain was deleted)"
    ]


def test_the_latest_checkpoint_deleted_with_what_it_bound(trail: Trail, capsys: Capsys) -> None:
    """The one deletion the trail alone cannot show: the last checkpoint and the records
    after the one before, as if never written.  A checkpoint kept elsewhere shows it, and
    so does asking that records older than a few minutes be checkpointed."""
    main(["audit", "verify", "--store", trail.url, "--key", str(trail.key_file)])
    kept = re.search(r"last checkpoint (2:[0-9a-f]{64})", capsys.readouterr().out)
    assert kept is not None
    chain = trail.writer_chain
    execute(trail.url, "DELETE FROM audit_checkpoint_heads WHERE checkpoint = 2")
    execute(trail.url, "DELETE FROM audit_checkpoints WHERE seq = 2")
    execute(trail.url, "DELETE FROM audit_log WHERE chain = ? AND seq >= 4", (chain,))
    (last,) = rows(trail.url, "SELECT hash FROM audit_log WHERE chain = ? AND seq = 3", (chain,))
    execute(
        trail.url,
        "UPDATE audit_chains SET head_seq = 3, head_hash = ? WHERE id = ?",
        (last[0], chain),
    )
    base = ["audit", "verify", "--store", trail.url, "--key", str(trail.key_file)]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--checkpoint", kept[1]]) == 1
    assert "checkpoint #2: (the given one) is gone" in capsys.readouterr().out
    assert main([*base, "--checkpointed-before", "2026-11-25T09:06:30Z"]) == 1
    assert re.search(
        rf"BROKEN at chain {trail.proxy_chain} record #4 \(e-[0-9a-f]+\): no checkpoint binds "
        r"it, though it was recorded before 2026-11-25T09:06:30.000000Z",
        capsys.readouterr().out,
    )

"""``guardproxy audit``: list, show, export, and verify catching tampering in the SQLite file.

The tampering is done the way an intruder would: with SQL on the database file,
behind guardproxy's back.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from guardproxy.cli.main import main
from guardproxy.store import DecisionRecord, HoldState, SqliteStore, Verdict

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
Capsys = pytest.CaptureFixture[str]
MIN = timedelta(minutes=1)


def _action(provider: str, operation: str, name: str) -> str:
    return json.dumps(
        {"provider": provider, "service": "core", "operation": operation,
         "resource": {"name": name}, "verb": "delete"}
    )  # fmt: skip


def _decision(n: int, outcome: str, provider: str = "k8s", **extra: object) -> DecisionRecord:
    return DecisionRecord(
        id=f"d-{n:04d}",
        at=T0 + n * MIN,
        session_id="s-alice" if n % 2 else "s-bob",
        action_json=_action(provider, "delete", f"res-{n}"),
        context_json='{"now":"2026-11-25T09:00:00Z"}',
        decision_json=json.dumps(
            {"outcome": outcome, "determining_rules": [f"set/rule-{outcome}"]}
        ),
        outcome=outcome,
        provider=provider,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A trail of 11 records: decisions, a hold's life, upstream statuses."""
    directory = tmp_path / "data"
    with SqliteStore(directory / "guardproxy.db") as store:
        store.append_decision(_decision(1, "allow"))
        store.append_decision(_decision(2, "deny", provider="aws"))
        hold = store.create_hold(
            session_id="s-alice",
            request_digest="dg",
            action_json=_action("k8s", "delete", "prod"),
            decision_json='{"outcome":"hold"}',
            summary="k8s core delete prod",
            grant="once",
            created_at=T0 + 3 * MIN,
            expires_at=T0 + 30 * MIN,
        )
        store.append_decision(_decision(3, "hold", hold_id=hold.id))
        store.record_approval(
            hold.id, approver="carol", groups=("sre",), verdict=Verdict.APPROVE,
            reason="planned maintenance", at=T0 + 4 * MIN,
        )  # fmt: skip
        store.resolve_hold(
            hold.id, state=HoldState.APPROVED, by="carol", reason="planned maintenance",
            now=T0 + 4 * MIN,
        )  # fmt: skip
        store.consume_approval("s-alice", "dg", T0 + 5 * MIN)
        store.append_decision(_decision(5, "allow", hold_id=hold.id))
        store.set_upstream_statuses([("d-0001", 200), ("d-0005", 200)])
        store.append_decision(_decision(6, "allow", provider="github"))
    return directory


def run(capsys: Capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr().out
    return code, out


def tamper(data_dir: Path, *statements: str) -> None:
    db = sqlite3.connect(data_dir / "guardproxy.db")
    with db:
        for statement in statements:
            db.execute(statement)
    db.close()


def test_verify_passes_an_untouched_trail(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "audit", "verify", "--data-dir", str(data_dir))
    assert code == 0, out
    assert out.startswith("audit trail intact: 11 records in 1 chain(s), 0 checkpoint(s)\n")
    assert re.search(r"chain 1 \(\S+ pid \d+\): 11 records, head 1:11:[0-9a-f]{64}", out)
    assert "not yet checkpointed: 11 record(s): chain 1 from #1" in out


def _problem_lines(out: str) -> list[str]:
    """The problems verify lists (under its verdict line)."""
    return [line.strip() for line in out.splitlines() if line.startswith("    ")]


def test_verify_catches_an_edited_field(data_dir: Path, capsys: Capsys) -> None:
    tamper(data_dir, "UPDATE audit_log SET outcome = 'allow' WHERE record_id = 'd-0002'")
    code, out = run(capsys, "audit", "verify", "--data-dir", str(data_dir))
    assert code == 1
    assert out.startswith("audit trail BROKEN at chain 1 record #2 (d-0002): its content")
    assert _problem_lines(out) == [  # only the edited record is blamed
        "chain 1 record #2 (d-0002): its content does not match its hash (edited)"
    ]


def test_verify_catches_an_edited_payload(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper(
        data_dir,
        "UPDATE audit_log SET payload = replace(payload, 'carol', 'mallory')"
        " WHERE kind = 'hold.approval'",
    )
    code, out = run(capsys, "audit", "verify", "--data-dir", str(data_dir), "--json")
    result = json.loads(out)
    assert code == 1 and not result["intact"]
    assert len(result["problems"]) == 1 and "chain 1 record #5 " in result["problems"][0]
    assert result["first_broken_record"] == result["problems"][0]


def test_verify_catches_a_deleted_record(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper(data_dir, "DELETE FROM audit_log WHERE seq = 4")
    code, out = run(capsys, "audit", "verify", "--data-dir", str(data_dir))
    assert code == 1
    assert "record #4 is missing" in out
    assert "chain 1 record #5 " in out  # the record after the gap is named


def test_verify_catches_an_inserted_record(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = sqlite3.connect(data_dir / "guardproxy.db")
    prev_hash, head_seq = db.execute(
        "SELECT hash, seq FROM audit_log ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    db.close()
    forged = (
        "INSERT INTO audit_log (chain, seq, record_id, kind, at, session_id, subject, outcome,"
        f" provider, payload, prev_hash, hash) VALUES (1, {head_seq + 1}, 'd-forged', 'decision',"
        " '2026-11-25T10:00:00.000000Z', 's-alice', 'd-forged', 'allow', 'aws',"
        f" '{{}}', '{prev_hash}', '{'ab' * 32}')"
    )
    tamper(data_dir, forged)
    code, out = run(capsys, "audit", "verify", "--data-dir", str(data_dir))
    assert code == 1
    assert f"BROKEN at chain 1 record #{head_seq + 1} (d-forged)" in out


def test_verify_catches_a_record_slipped_into_the_middle(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # renumber the later records to make room, as an intruder would
    tamper(
        data_dir,
        "UPDATE audit_log SET seq = seq + 100 WHERE seq >= 3",
        "UPDATE audit_log SET seq = seq - 99 WHERE seq >= 103",
        "INSERT INTO audit_log (chain, seq, record_id, kind, at, session_id, subject, outcome,"
        " provider, payload, prev_hash, hash) SELECT chain, 3, 'd-forged', kind, at,"
        " session_id, 'd-forged', 'allow', provider, payload, prev_hash, hash FROM audit_log"
        " WHERE seq = 4",
    )
    code, out = run(capsys, "audit", "verify", "--data-dir", str(data_dir))
    assert code == 1
    assert "BROKEN at chain 1 record #3 (d-forged)" in out


def test_verify_with_a_kept_head_catches_a_cut_tail(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = run(capsys, "audit", "verify", "--data-dir", str(data_dir))
    head = re.search(r"head (\d+:\d+:[0-9a-f]{64})", out)
    assert head is not None
    tamper(data_dir, "DELETE FROM audit_log WHERE seq >= 10")
    code, out = run(capsys, "audit", "verify", "--data-dir", str(data_dir))
    assert code == 1  # the chain's head row says where it ended...
    assert "chain 1 record #11: is gone: the chain ends at #9, audit_chains says at #11" in out
    tamper(  # ...unless the intruder moves it too
        data_dir,
        "UPDATE audit_chains SET head_seq = 9,"
        " head_hash = (SELECT hash FROM audit_log WHERE seq = 9) WHERE id = 1",
    )
    code, out = run(capsys, "audit", "verify", "--data-dir", str(data_dir))
    assert code == 0, out  # a cut tail leaves a valid, shorter chain...
    code, out = run(capsys, "audit", "verify", "--data-dir", str(data_dir), "--head", head[1])
    assert code == 1 and "(the given head) is gone: the tail was cut" in out  # ...or a kept head


def test_list_filters(data_dir: Path, capsys: Capsys) -> None:
    base = ("audit", "list", "--data-dir", str(data_dir), "--json")

    def ids(*filters: str) -> list[str]:
        code, out = run(capsys, *base, *filters)
        assert code == 0
        return [json.loads(line)["id"] for line in out.splitlines()]

    assert ids() == ["d-0006", "d-0005", "d-0003", "d-0002", "d-0001"]
    assert ids("--session", "s-bob") == ["d-0006", "d-0002"]
    assert ids("--outcome", "hold") == ["d-0003"]
    assert ids("--provider", "aws") == ["d-0002"]
    assert ids("--since", "2026-11-25T09:03:00Z", "--until", "2026-11-25T09:06:00Z") == [
        "d-0005",
        "d-0003",
    ]
    code, out = run(capsys, "audit", "list", "--data-dir", str(data_dir), "--kind", "all")
    assert code == 0 and "hold.approval" in out and "upstream" in out
    code, out = run(capsys, "audit", "list", "--data-dir", str(data_dir))
    assert "k8s core delete res-1" in out and "[set/rule-allow]" in out


def test_show_gathers_the_decision_its_hold_and_approvals(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "audit", "show", "d-0003", "--data-dir", str(data_dir), "--json")
    assert code == 0
    kinds = [r["kind"] for r in json.loads(out)]
    assert kinds == [
        "hold.created",
        "decision",
        "hold.approval",
        "hold.approved",
        "hold.released",
    ]
    code, out = run(capsys, "audit", "show", "d-0001", "--data-dir", str(data_dir))
    assert code == 0 and "upstream" in out and '"status": 200' in out
    code, _ = run(capsys, "audit", "show", "d-nope", "--data-dir", str(data_dir))
    assert code == 1


def test_export_is_the_chain_as_json_lines(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "audit", "export", "--format", "jsonl", "--data-dir", str(data_dir))
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in lines] == list(range(1, 12))
    assert all(r["prev_hash"] == p["hash"] for p, r in itertools.pairwise(lines))
    assert lines[0]["payload"]["action"]["provider"] == "k8s"
    code, out = run(
        capsys, "audit", "export", "--data-dir", str(data_dir), "--since", "2026-11-25T09:05:00Z"
    )
    assert {json.loads(line)["at"] >= "2026-11-25T09:05" for line in out.splitlines()} == {True}


def test_a_missing_trail_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", "--data-dir", str(tmp_path / "nothing")]) == 2
    assert "no audit trail at" in capsys.readouterr().err

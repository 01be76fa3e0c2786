"""Replay trusts only a chain that verifies: a record edited in the database (its outcome
rewritten, with or without a recomputed hash), an inserted or a deleted one makes
``guardproxy replay`` refuse, naming the first break; ``--allow-broken-chain`` warns and
marks the records at a break.  Real SQLite files, edited with sqlite3 as an attacker
with the database would; the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from guardproxy.action import Action, Environment, Provider, Resource, Verb
from guardproxy.audit.replay import ChainCheck, checked_record
from guardproxy.cli.main import main
from guardproxy.context import Context, SessionInfo
from guardproxy.policy import evaluate
from guardproxy.redact import redact_json_text
from guardproxy.server import load_policies
from guardproxy.store import DecisionRecord, SqliteStore, open_store
from guardproxy.store.chain import record_hash

from .tampering import execute

POLICIES = Path(__file__).resolve().parents[2] / "policies"
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
GUARDPROXY = [sys.executable, "-m", "guardproxy"]


def _recorded_day(path: Path) -> None:
    """A read (allowed), a prod namespace delete (held) and another read, decided by the
    shipped bundle and recorded as the proxy records them."""
    bundle = load_policies(POLICIES)
    actions = [
        Action(provider=Provider.K8S, service="core", operation="list", verb=Verb.READ),
        Action(
            provider=Provider.K8S, service="core", operation="delete", verb=Verb.DESTROY,
            resource=Resource(type="k8s:namespace", name="prod"), environment=Environment.PROD,
        ),
        Action(provider=Provider.K8S, service="core", operation="get", verb=Verb.READ),
    ]  # fmt: skip
    with SqliteStore(path) as store:
        for n, action in enumerate(actions):
            context = Context(now=T0 + timedelta(minutes=n), session=SessionInfo(id="s-1"))
            decision = evaluate(bundle, action, context)
            store.append_decision(
                DecisionRecord(
                    id=f"d-{n}", at=context.now, session_id="s-1",
                    action_json=redact_json_text(action.model_dump_json()),
                    context_json=context.model_dump_json(),
                    decision_json=decision.model_dump_json(),
                    outcome=decision.outcome.value, provider="k8s",
                )
            )  # fmt: skip


def _edit_outcome(path: Path, record_id: str, outcome: str, *, rehash: bool = False) -> None:
    """Rewrite a decision's outcome in the chain record (payload and column), as someone
    with write access to the database would; ``rehash`` also recomputes its own hash."""
    with sqlite3.connect(path) as db:
        payload_text, seq, prev = db.execute(
            "SELECT payload, seq, prev_hash FROM audit_log WHERE record_id = ?", (record_id,)
        ).fetchone()
        payload = json.loads(payload_text)
        payload["decision"]["outcome"] = outcome
        payload["outcome"] = outcome
        edited = json.dumps(payload, separators=(",", ":"))
        db.execute(
            "UPDATE audit_log SET payload = ?, outcome = ? WHERE record_id = ?",
            (edited, outcome, record_id),
        )
    if rehash:
        with SqliteStore(path) as store:
            record = store.get_audit_record(record_id)
        assert record is not None
        with sqlite3.connect(path) as db:
            db.execute(
                "UPDATE audit_log SET hash = ? WHERE record_id = ?",
                (record_hash(record, seq, prev), record_id),
            )


def _replay(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    return subprocess.run(
        [*GUARDPROXY, "replay", "--policies", str(POLICIES), "--store", str(path), *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_an_intact_trail_replays(tmp_path: Path) -> None:
    path = tmp_path / "guardproxy.db"
    _recorded_day(path)
    result = _replay(path, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["chain"] == {"records": 3, "intact": True, "problems": []}
    assert report["replayed"] == 3 and report["changed"] == 0


def test_an_edited_outcome_is_refused_with_the_first_broken_record(tmp_path: Path) -> None:
    path = tmp_path / "guardproxy.db"
    _recorded_day(path)
    _edit_outcome(path, "d-1", "allow")  # the held prod delete, now "allowed"
    refused = _replay(path)
    assert refused.returncode == 1
    assert refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert line == (
        "guardproxy: the audit trail is broken at chain 1 record #2 (d-1): its content does not "
        "match its hash (edited); replay does not report a tampered trail as what was "
        "recorded (`guardproxy audit verify` lists every break; --allow-broken-chain "
        "replays anyway)"
    )
    assert _replay(path, "--shadow").returncode == 1  # every mode reads the same chain

    warned = _replay(path, "--allow-broken-chain", "--json")
    assert warned.returncode == 0, warned.stderr
    assert "warning: the audit trail is broken at chain 1 record #2 (d-1)" in warned.stderr
    report = json.loads(warned.stdout)
    assert report["chain"]["intact"] is False and report["chain"]["records"] == 3
    [change] = report["changes"]
    assert (change["id"], change["recorded"], change["replayed"]) == ("d-1", "allow", "hold")
    assert change["chain_intact"] is False
    table = _replay(path, "--allow-broken-chain")
    assert "[chain broken here]" in table.stdout


def test_a_rewrite_with_a_recomputed_hash_is_caught_by_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "guardproxy.db"
    _recorded_day(path)
    _edit_outcome(path, "d-1", "allow", rehash=True)
    refused = _replay(path)
    assert refused.returncode == 1
    assert (
        "broken at chain 1 record #3 (d-2): does not follow the previous record" in refused.stderr
    )
    with SqliteStore(path) as store:  # the flow replay's single-record check sees it too
        check = ChainCheck()
        assert checked_record(store, "d-1", check) is not None
        assert [str(p) for p in check.problems] == [
            "chain 1 record #2 (d-1): the record after it does not follow it (rewritten with a "
            "new hash)"
        ]
        intact = ChainCheck()
        checked_record(store, "d-0", intact)
        assert intact.intact


def test_a_deleted_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "guardproxy.db"
    _recorded_day(path)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM audit_log WHERE record_id = 'd-1'")
    refused = _replay(path)
    assert refused.returncode == 1
    assert "broken at chain 1 record #3 (d-2): record #2 is missing (and 1 more)" in refused.stderr
    with SqliteStore(path) as store:
        check = ChainCheck()
        checked_record(store, "d-2", check)
        assert [str(p) for p in check.problems] == ["chain 1 record #3 (d-2): record #2 is missing"]


@pytest.fixture(params=["sqlite", "postgres"])
def two_writers(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A day recorded by two writers (two chains, their records interleaved), decided by
    the shipped bundle; the store's URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'guardproxy.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    bundle = load_policies(POLICIES)
    stores = [open_store(url, writer="proxy"), open_store(url, writer="decision writer")]
    try:
        for n in range(6):
            action = Action(
                provider=Provider.K8S, service="core", operation="delete" if n % 3 else "list",
                verb=Verb.DESTROY if n % 3 else Verb.READ,
                resource=Resource(type="k8s:namespace", name="prod"),
                environment=Environment.PROD,
            )  # fmt: skip
            context = Context(now=T0 + timedelta(minutes=n), session=SessionInfo(id="s-1"))
            decision = evaluate(bundle, action, context)
            stores[n % 2].append_decision(
                DecisionRecord(
                    id=f"d-{n}", at=context.now, session_id="s-1",
                    action_json=redact_json_text(action.model_dump_json()),
                    context_json=context.model_dump_json(),
                    decision_json=decision.model_dump_json(),
                    outcome=decision.outcome.value, provider="k8s",
                )
            )  # fmt: skip
    finally:
        for store in stores:
            store.close()
    return url


def _replay_here(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    code = main(["replay", "--policies", str(POLICIES), "--store", url, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_replay_reads_and_verifies_every_chain(
    two_writers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _replay_here(capsys, two_writers, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["chain"] == {"records": 6, "intact": True, "problems": []}
    assert report["replayed"] == 6 and report["changed"] == 0 and report["exact"] == 6
    records = open_store(two_writers).audit_records()
    assert len({r.chain for r in records}) == 2
    assert [r.record_id for r in records] == [f"d-{n}" for n in range(6)]


def test_replay_names_the_broken_record_in_its_chain(
    two_writers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(two_writers)
    try:
        record = store.get_audit_record("d-3")
    finally:
        store.close()
    assert record is not None
    execute(two_writers, "UPDATE audit_log SET outcome = 'deny' WHERE record_id = 'd-3'")
    code, out, err = _replay_here(capsys, two_writers)
    assert code == 1 and out == ""
    assert err.startswith(
        f"guardproxy: the audit trail is broken at chain {record.chain} record #2 (d-3): its "
        "content does not match its hash (edited)"
    )

"""The decision pipeline's steps, in process: what the proxy and replay both rely on.

Requests are mitmproxy flows (``mitmproxy.test.tflow``) read the way the Guard addon
reads them (``intercept.flows.http_request``); AWS requests are signed by boto3
(tests/pipeline/day.py). Store: a real SqliteStore; bundle: the shipped policies.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http, io
from mitmproxy.test import tflow

from guardproxy.action import Verb
from guardproxy.context import SessionInfo
from guardproxy.intercept.flows import SESSION, http_request
from guardproxy.intercept.replay import flow_session, read_exchanges, storable_metadata
from guardproxy.pipeline import FixedPolicies, LivePipeline, Pipeline, Verdict
from guardproxy.pipeline.live import INLINE_BODY_BYTES
from guardproxy.pipeline.replay import Exchange, replay_exchanges
from guardproxy.recognise import RecogniseSettings
from guardproxy.recognise.request import HttpRequest
from guardproxy.server import load_policies
from guardproxy.session.history import SessionHistory
from guardproxy.session.registry import anonymous_session
from guardproxy.store import SqliteStore

from .day import INSTANCE, WORKER, Call, Sdk, instances_xml

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SETTINGS = RecogniseSettings()
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ALICE = SessionInfo(id="s-alice", name="alice-agent", user="alice", anonymous=False)
BUNDLE = load_policies(POLICIES)


def request_of(call: Call) -> HttpRequest:
    """``call`` as the Guard addon reads it off a mitmproxy flow."""
    made = http.Request.make(call.method, call.url, call.body)
    for name, value in call.headers.items():  # after the URL, which sets Host to its own
        made.headers[name] = value
    return http_request(tflow.tflow(req=made))


def neon(body: object, **headers: str) -> HttpRequest:
    return request_of(
        Call("alice", "POST", "http://ep-day.us-east-2.aws.neon.tech/sql",
             {"Content-Type": "application/json", **headers}, json.dumps(body).encode())
    )  # fmt: skip


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    store = SqliteStore(tmp_path / "guardproxy.db")
    try:
        yield Pipeline(FixedPolicies(BUNDLE), SETTINGS, SessionHistory(store))
    finally:
        store.close()


def test_every_reading_gets_the_session_and_a_change_the_host_mismatch(
    pipeline: Pipeline,
) -> None:
    claimed = {"Host": "other.day.test"}
    verdict = pipeline.decide(neon({"query": "SELECT 1; DROP TABLE audit"}, **claimed), ALICE, T0)
    readings = verdict.action.all_readings()
    assert [r.verb for r in readings] == [Verb.DESTROY, Verb.READ]
    assert {r.actor.session_id for r in readings} == {"s-alice"}
    assert ["host-mismatch" in r.risk_tags for r in readings] == [True, False]
    honest = pipeline.decide(neon({"query": "DROP TABLE audit"}), ALICE, T0)
    assert "host-mismatch" not in honest.action.risk_tags


def test_history_is_read_only_when_a_rule_can_read_it(pipeline: Pipeline) -> None:
    delete = neon({"query": "DELETE FROM orders WHERE id = 7"})
    select = neon({"query": "SELECT 1"})
    first = pipeline.decide(delete, ALICE, T0)
    pipeline.after(first, "allow", T0)
    read = pipeline.decide(select, ALICE, T0 + timedelta(seconds=1))
    later = pipeline.decide(delete, ALICE, T0 + timedelta(seconds=2))
    assert not BUNDLE.reads_history(Verb.READ) and BUNDLE.reads_history(Verb.DELETE)
    assert read.context.history.session.total == 0  # not computed: no rule reads it
    assert later.context.history.session.total == 1
    assert later.decision.input_hash != first.decision.input_hash


def test_a_name_learned_from_a_forwarded_response_resolves_the_id(pipeline: Pipeline) -> None:
    sdk = Sdk()
    describe = request_of(sdk.call("alice", "ec2", "describe_instances"))
    terminate = request_of(sdk.call("alice", "ec2", "terminate_instances", InstanceIds=[WORKER]))
    before = pipeline.decide(terminate, ALICE, T0)
    held = pipeline.decide(describe, ALICE, T0)
    assert pipeline.after(held, "hold", T0) is None  # nothing came back to learn from
    learner = pipeline.after(pipeline.decide(describe, ALICE, T0), "allow", T0)
    assert learner is not None
    body = instances_xml((WORKER, "staging-worker", "staging"))
    assert learner(body) == body and learner(b"") == b""  # passed on untouched
    after = pipeline.decide(terminate, ALICE, T0)
    assert (before.action.resource.name, before.action.environment.value) == ("", "unknown")
    assert (after.action.resource.name, after.action.environment.value) == (
        "staging-worker",
        "staging",
    )
    assert (before.decision.outcome.value, after.decision.outcome.value) == ("hold", "allow")


def test_replay_learns_only_from_a_successful_response_to_a_forwarded_request() -> None:
    sdk = Sdk()
    describe = request_of(sdk.call("alice", "ec2", "describe_instances"))
    terminate = request_of(sdk.call("alice", "ec2", "terminate_instances", InstanceIds=[INSTANCE]))
    body = instances_xml((INSTANCE, "prod-web", "prod"))

    def replayed(status: int) -> str:
        exchanges = [
            Exchange(describe, ALICE, T0, status, body),
            Exchange(terminate, ALICE, T0 + timedelta(seconds=1)),
        ]
        report = replay_exchanges(exchanges, BUNDLE, SETTINGS)
        return report.decisions[1].summary

    assert replayed(200) == "aws ec2 TerminateInstances prod-web"
    assert replayed(403) == f"aws ec2 TerminateInstances {INSTANCE}"


def test_the_live_pipeline_records_a_change_at_once_and_reads_in_a_batch(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a batch long enough that a loaded machine cannot flush it between the two requests
    monkeypatch.setattr("guardproxy.pipeline.live.READ_BATCH_SECONDS", 1.0)
    live = LivePipeline(pipeline, lambda: T0)
    select = neon({"query": "SELECT 1"})
    delete = neon({"query": "DELETE FROM orders WHERE id = 7"})

    async def day() -> tuple[int, int, int, int]:
        read = await live.decide(select, ALICE)
        await live.after(read, "allow")
        queued = live.unrecorded_reads
        change = await live.decide(delete, ALICE)
        await live.after(change, "allow")
        counted = pipeline.history.context(change.action, ALICE, T0).history.session.total
        while live.unrecorded_reads:
            await asyncio.sleep(0.01)
        total = pipeline.history.context(change.action, ALICE, T0).history.session.total
        return queued, counted, live.unrecorded_reads, total

    queued, counted, left, total = asyncio.run(asyncio.wait_for(day(), timeout=10))
    assert (queued, counted, left, total) == (1, 1, 0, 2)


def test_a_flow_names_its_session_or_is_the_client_anonymous_one(tmp_path: Path) -> None:
    named, plain, odd = tflow.tflow(), tflow.tflow(), tflow.tflow()
    named.metadata = storable_metadata({SESSION: ALICE, "guardproxy.learner": object()})
    assert named.metadata == {SESSION: ALICE.model_dump(mode="json")}
    assert storable_metadata({SESSION: anonymous_session("10.0.0.9")}) == {}
    odd.metadata[SESSION] = {"id": "s-1", "anonymous": "perhaps"}
    assert flow_session(named) == ALICE
    assert flow_session(plain) == anonymous_session(plain.client_conn.peername[0])
    with pytest.raises(ValueError, match="not a guardproxy session"):
        flow_session(odd)
    path = tmp_path / "mixed.flows"
    with path.open("wb") as handle:
        writer = io.FlowWriter(handle)  # type: ignore[no-untyped-call]
        for each in (named, tflow.ttcpflow(), plain):
            writer.add(each)
    read = list(read_exchanges(path))
    assert [None if e is None else e.session.id for e in read] == [
        "s-alice",
        None,
        "anonymous:127.0.0.1",
    ]


@pytest.mark.parametrize(
    ("settle_inline", "size", "decided_on_loop", "settled_on_loop"),
    [
        (True, 100, True, True),  # SQLite, synchronous = normal: no hop at all
        (False, 100, True, False),  # a store that waits (disk, network): one hop to settle
        (True, INLINE_BODY_BYTES + 1, False, False),  # a big body: decided in a thread
        (False, INLINE_BODY_BYTES + 1, False, False),
    ],
)
def test_the_live_pipeline_decides_small_requests_on_the_loop_and_settles_where_the_store_allows(
    pipeline: Pipeline, settle_inline: bool, size: int, decided_on_loop: bool, settled_on_loop: bool
) -> None:
    live = LivePipeline(pipeline, lambda: T0, settle_inline=settle_inline)
    delete = neon({"query": "DELETE FROM orders WHERE id = 7", "pad": "x" * size})
    assert (len(delete.body) <= INLINE_BODY_BYTES) is (size == 100)
    deciding: list[int] = []
    original = pipeline.decide

    def decide(*args: Any, **kwargs: Any) -> Verdict:
        deciding.append(threading.get_ident())
        return original(*args, **kwargs)

    pipeline.decide = decide  # type: ignore[method-assign]

    async def run() -> tuple[Verb, int, int, int]:
        verdict, settled_in = await live.decide_then(delete, ALICE, lambda _: threading.get_ident())
        assert settled_in is not None
        return verdict.action.verb, threading.get_ident(), deciding[0], settled_in

    verb, loop, decided_in, settled_in = asyncio.run(asyncio.wait_for(run(), timeout=10))
    assert verb is Verb.DELETE
    assert (decided_in == loop, settled_in == loop) == (decided_on_loop, settled_on_loop)

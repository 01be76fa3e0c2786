"""Replay decides exactly as the live proxy did: one recorded day, three ways.

The day (tests/pipeline/day.py: every provider, three sessions, deletes and re-creates,
an instance renamed by a DescribeInstances response, a change sent with another Host,
requests performing several operations) is sent through a real guardproxy (the
shipped policies, a hold window of 0.2 s, a clock the test moves) to a loopback
upstream, and captured as a mitmproxy flow file. Then:

* the recorded decisions are replayed from the audit chain (``replay_records``);
* the flow file is replayed through the whole pipeline (``replay_flows``, and the CLI);

and every decision, input hash and decision record must be identical to what the proxy
recorded.

Two mitmproxy addons of the test join the running proxy, after guardproxy's own:
``Loopback`` connects every upstream connection to the loopback upstream whatever host
the request names (so ``compute.googleapis.com`` can be recognised as Google Cloud while
nothing leaves the machine), and ``Capture`` writes each finished flow the way a
guardproxy capture keeps it (``storable_metadata``; the streamed response body teed,
since the proxy streams every response; the request's time stamped from the proxy's
clock, which is what the proxy decided with).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
from mitmproxy import http, io
from mitmproxy.proxy import server_hooks

from guardproxy.audit.replay import ChainCheck, as_recorded, checked_chain, replay_records
from guardproxy.cli.main import main
from guardproxy.config import ProxyConfig
from guardproxy.gate.gate import utc_now
from guardproxy.gate.recorder import DecisionDraft
from guardproxy.intercept.addons import Guard
from guardproxy.intercept.replay import replay_flows, storable_metadata
from guardproxy.pipeline.replay import FlowDecision, FlowReport
from guardproxy.recognise import RecogniseSettings
from guardproxy.server import BackgroundGuardproxy, load_policies
from guardproxy.session.environment import proxy_url
from guardproxy.session.history import HistorySettings
from guardproxy.session.names import instance_key
from guardproxy.store import DecisionRecord, open_store

from .day import KUBE, REGION, Call, DayUpstream, recorded_day, times

pytestmark = pytest.mark.slow

POLICIES = Path(__file__).resolve().parents[2] / "policies"
PROXY_SETTINGS: dict[str, Any] = {
    "kubernetes_hosts": [KUBE],
    "environments": {"github:acme": "prod"},
    "destructive_budget": 8,
}
"""The settings of the proxy's config file that decisions depend on; replay gets them too."""
SETTINGS = RecogniseSettings(environments={"github:acme": "prod"}, kubernetes_hosts=(KUBE,))
HISTORY = HistorySettings(destructive_budget=8)
SETTLE_SECONDS = 10.0


class DayClock:
    """The proxy's clock: the day's time of the call being sent."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


class Loopback:
    """Every upstream connection goes to the loopback upstream (runs after the Guard's
    own check of the address the request named)."""

    def __init__(self, port: int) -> None:
        self._address = ("127.0.0.1", port)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        data.server.address = self._address


class _Tee:
    """Passes a streamed response's chunks to what streamed them before, keeping a copy."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.body = bytearray()

    def __call__(self, chunk: bytes) -> bytes:
        self.body += chunk
        return bytes(self.inner(chunk)) if callable(self.inner) else chunk


class Capture:
    """Writes every finished flow to a flow file, as a guardproxy capture keeps it."""

    def __init__(self, handle: BinaryIO, clock: Callable[[], datetime]) -> None:
        self._writer = io.FlowWriter(handle)  # type: ignore[no-untyped-call]
        self._clock = clock
        self._tees: dict[str, _Tee] = {}
        self._decided_at: dict[str, float] = {}
        self.written = 0
        self.errors: list[str] = []

    def request(self, flow: http.HTTPFlow) -> None:
        """After the Guard decided (its hook runs first): the time it decided with."""
        self._decided_at[flow.id] = self._clock().timestamp()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        if flow.response.stream:
            tee = _Tee(flow.response.stream)
            flow.response.stream = tee
            self._tees[flow.id] = tee

    def response(self, flow: http.HTTPFlow) -> None:
        tee = self._tees.pop(flow.id, None)
        live = flow.metadata
        flow.metadata = storable_metadata(live)
        try:
            captured = flow.copy()  # type: ignore[no-untyped-call]
        finally:
            flow.metadata = live
        assert captured.response is not None
        if tee is not None:
            captured.response.raw_content = bytes(tee.body)
        captured.request.timestamp_start = self._decided_at.pop(flow.id)
        self._writer.add(captured)
        self.written += 1

    def error(self, flow: http.HTTPFlow) -> None:
        self.errors.append(f"{flow.request.url}: {flow.error}")


@dataclass
class LiveDay:
    """What the live proxy did with the day: its data directory and the capture."""

    data_dir: Path
    flows: Path
    calls: list[Call]
    statuses: list[int]


def _settle(
    guard: Guard, background: BackgroundGuardproxy, capture: Capture, call: Call, sent: int
) -> None:
    """Wait until the proxy has finished with a call: the flow is captured, its read
    batch is recorded into the history, and a name its response teaches is learned.
    (The proxy records reads 50 ms later and learns once the response ended: a call sent
    sooner may be decided without them, which replay cannot know; the day leaves the
    proxy the time to finish.)"""
    history = background.service.history
    assert history is not None
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        learned = True
        if call.learns is not None:
            instance, name = call.learns
            found = history.names.get(instance_key(REGION, instance))
            learned = found is not None and found.name == name
        if learned and guard.pipeline.unrecorded_reads == 0 and capture.written == sent:
            return
        assert time.monotonic() < deadline, f"the proxy did not finish with {call.url}"
        time.sleep(0.01)


def live_day(tmp_path: Path, upstream: DayUpstream) -> LiveDay:
    calls = recorded_day()
    moments = times(calls)
    clock = DayClock(moments[0])
    config = ProxyConfig.model_validate(
        {
            "data_dir": tmp_path / "data",
            "policies": POLICIES,
            "listen": "127.0.0.1:0",
            "control": "127.0.0.1:0",
            "hold_window_seconds": 0.2,
            **PROXY_SETTINGS,
        }
    )
    flows = tmp_path / "day.flows"
    statuses: list[int] = []
    with flows.open("wb") as handle:
        background = BackgroundGuardproxy(config, clock=clock).start()
        try:
            service = background.service
            assert service.proxy is not None and service.registry is not None
            master = service.proxy._master
            assert master is not None
            capture = Capture(handle, clock)

            async def join() -> None:  # addons are added on the proxy's own loop
                master.addons.add(Loopback(upstream.port), capture)  # type: ignore[no-untyped-call]

            background.call(join())
            guard = master.addons.get("guard")  # type: ignore[no-untyped-call]
            assert isinstance(guard, Guard)
            port = service.proxy.port
            proxies = {"anonymous": f"http://127.0.0.1:{port}"}
            for who in ("alice", "bob"):
                session, credential = service.registry.create(
                    name=f"{who}-agent", user=who, command=["claude"], cwd=str(tmp_path),
                    labels=["day"], now=utc_now(),
                )  # fmt: skip
                proxies[who] = proxy_url("127.0.0.1", port, session.id, credential.token)
            clients = {who: httpx.Client(proxy=url, timeout=30) for who, url in proxies.items()}
            try:
                for sent, (call, moment) in enumerate(zip(calls, moments, strict=True), 1):
                    clock.now = moment
                    response = clients[call.who].request(
                        call.method, call.url, headers=call.headers, content=call.body
                    )
                    statuses.append(response.status_code)
                    _settle(guard, background, capture, call, sent)
            finally:
                for client in clients.values():
                    client.close()
            assert capture.errors == []
            assert capture.written == len(calls)
        finally:
            background.stop()
    return LiveDay(tmp_path / "data", flows, calls, statuses)


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDay]:
    tmp_path = tmp_path_factory.mktemp("day")
    with DayUpstream() as upstream:
        found = live_day(tmp_path, upstream)
        assert not upstream.handler_errors, upstream.handler_errors
    yield found


def recorded_decisions(data_dir: Path) -> dict[datetime, DecisionRecord]:
    """The proxy's decision records by the time they were decided (one per call, in the
    order of the calls)."""
    store = open_store(str(data_dir / "guardproxy.db"))
    try:
        records = store.list_decisions(limit=10_000)
    finally:
        store.close()
    by_time = {record.at: record for record in sorted(records, key=lambda r: r.at)}
    assert len(by_time) == len(records)
    return by_time


def replayed_flows(day: LiveDay) -> FlowReport:
    store = open_store(str(day.data_dir / "guardproxy.db"))
    try:
        bundle = load_policies(POLICIES)
        return replay_flows(day.flows, bundle, SETTINGS, history_settings=HISTORY, recorded=store)
    finally:
        store.close()


def as_record(replayed: FlowDecision) -> tuple[str, str, str, str]:
    """A replayed decision as the gate records it (its draft, redacted)."""
    verdict = replayed.verdict
    assert verdict is not None
    record = DecisionDraft(
        id="replayed",
        at=replayed.at,
        session_id=verdict.session.id,
        action_json=verdict.action.canonical_json(),
        context=verdict.context.json_parts(),
        decision_json=verdict.decision.model_dump_json(),
        outcome=replayed.outcome,
        hold_id=None,
        upstream_status=None,
        provider=verdict.action.provider.value,
        shadow_json=None,
    ).redacted()
    return record.action_json, record.context_json, record.decision_json, record.outcome


def test_the_day_covers_what_replay_must_reproduce(day: LiveDay) -> None:
    records = list(recorded_decisions(day.data_dir).values())
    assert len(records) == len(day.calls)
    actions = [json.loads(r.action_json) for r in records]
    contexts = [json.loads(r.context_json) for r in records]
    assert {a["provider"] for a in actions} >= {
        "aws", "k8s", "gcp", "azure", "github", "git", "tfc", "docker", "sql", "unknown",
    }  # fmt: skip
    assert {r.outcome for r in records} == {"allow", "hold", "deny"}
    assert {r.session_id.split(":")[0] for r in records} >= {"anonymous"}
    assert len({r.session_id for r in records}) == 3
    assert any("host-mismatch" in a["risk_tags"] for a in actions)
    assert any(a.get("readings") for a in actions)
    assert sum(bool(c["signals"]["recreate"]) for c in contexts) >= 2
    assert any(c["signals"]["destructive_budget_exceeded"] for c in contexts)
    terminated = [a for a in actions if a["operation"] == "TerminateInstances"]
    stopped = [a for a in actions if a["operation"] == "StopInstances"]
    assert [(a["resource"]["name"], a["environment"]) for a in terminated] == [
        ("staging-worker", "staging"),
        ("prod-web", "prod"),
    ]
    assert [(a["resource"]["name"], a["environment"]) for a in stopped] == [
        ("staging-web", "staging")
    ]


def test_replaying_the_records_reproduces_every_decision(day: LiveDay) -> None:
    store = open_store(str(day.data_dir / "guardproxy.db"))
    try:
        check = ChainCheck()
        chain = list(checked_chain(store, check))
    finally:
        store.close()
    assert check.intact, check.problems
    report = replay_records(chain, load_policies(POLICIES))
    assert len(report.results) == len(day.calls) and not report.unreadable
    assert [r.record_id for r in report.results if not (r.exact and r.input_intact)] == []


def test_replaying_the_flows_reproduces_every_decision_input_and_record(day: LiveDay) -> None:
    report = replayed_flows(day)
    recorded = recorded_decisions(day.data_dir)
    assert report.skipped == 0 and len(report.decisions) == len(day.calls)
    assert report.chain.intact
    mismatches = []
    for replayed in report.decisions:
        record = recorded[replayed.at]
        live = (record.action_json, record.context_json, record.decision_json, record.outcome)
        if as_record(replayed) != live:
            mismatches.append((replayed.index, replayed.summary))
        decision = json.loads(record.decision_json)
        assert replayed.input_hash == decision["input_hash"]
        assert replayed.verdict is not None
        assert as_recorded(replayed.verdict.decision) == decision
    assert mismatches == []
    forwarded = [d for d in report.decisions if d.outcome == "allow"]
    assert report.compared == forwarded  # a forwarded flow names its recorded decision
    assert all(d.exact and d.same_input for d in report.compared)


def test_the_replay_command_reports_the_flows_identical(
    day: LiveDay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "guardproxy.yaml"
    config.write_text(json.dumps(PROXY_SETTINGS))  # JSON is YAML
    replay = ["replay", "--flows", str(day.flows), "--policies", str(POLICIES),
              "--data-dir", str(day.data_dir), "--json", "--fail-on-change"]  # fmt: skip
    code = main([*replay, "--config", str(config)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["requests"] == len(day.calls)
    assert report["exact"] == report["same_input"] == report["with_recorded_decision"] > 0
    assert report["differences"] == []
    # the same settings as flags; without the proxy's budget, its burst is held later
    flags = ["--kubernetes-host", KUBE, "--env", "github:acme=prod"]
    assert main([*replay, *flags, "--destructive-budget", "8"]) == 0
    assert json.loads(capsys.readouterr().out)["exact"] == report["exact"]
    main([*replay, *flags])
    otherwise = json.loads(capsys.readouterr().out)
    assert otherwise["distribution"] != report["distribution"]
    assert otherwise["exact"] < report["exact"]

"""Schedule sources against fakes of PagerDuty and Opsgenie on loopback (real HTTP through
tornado's client): what is asked, who comes back, the cache (a time-to-live and the end of
a shift), the stale fallback shown as stale, nobody once that is too old, and on-call
people matched to approvers through their links."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from guardproxy.approvals.oncall import approvers_on_call
from guardproxy.approvals.schedules import (
    OnCallConfigError,
    OnCallPerson,
    Roster,
    Schedules,
    build_schedules,
)
from guardproxy.approvals.settings import OnCallSettings
from guardproxy.approvals.webapi import LazyTransport
from guardproxy.store import ApproverLink

from .fakes import FakeOpsgenie, FakePagerDuty, PdOnCall, PdUser

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BOB = PdUser("PBOB001", "Bob Builder", "Bob@Example.com")
ALICE = PdUser("PALICE1", "Alice Ops", "alice@example.com")
CAROL = PdUser("PCAROL1", "Carol Dev", "carol@example.com")
DAVE = PdUser("PDAVE01", "Dave Boss", "dave@example.com")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run[R](make: Callable[[], Awaitable[R]]) -> R:
    async def main() -> R:
        return await make()

    return asyncio.run(main())


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        fake.oncalls = [
            PdOnCall(BOB, "2025-02-28T12:05:00Z", "2025-03-01T12:05:00Z", schedule="PSCHED1"),
            PdOnCall(ALICE, "2025-03-01T12:05:00Z", "2025-03-02T12:05:00Z", schedule="PSCHED1"),
            # the same shift seen through a second escalation policy: one person
            PdOnCall(
                BOB,
                "2025-02-28T12:05:00Z",
                "2025-03-01T12:05:00Z",
                schedule="PSCHED1",
                escalation_policy="PEP0002",
            ),
            PdOnCall(CAROL, "2025-02-01T00:00:00Z", None, schedule="PSCHED2"),
            PdOnCall(DAVE, None, None, escalation_level=2),  # always on call at level 2
        ]
        yield fake


@pytest.fixture
def opsgenie() -> Iterator[FakeOpsgenie]:
    with FakeOpsgenie() as fake:
        fake.schedules = {"platform_schedule": ["alice@example.com", "bob@example.com"]}
        yield fake


def settings(pagerduty: FakePagerDuty | None = None, **schedules: Any) -> OnCallSettings:
    values: dict[str, Any] = {"schedules": schedules, "cache_seconds": 600, "stale_seconds": 1800}
    if pagerduty is not None:
        values["pagerduty"] = {"api_url": pagerduty.url, "token_env": "TEST_PD_TOKEN"}
    return OnCallSettings.model_validate(values)


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PD_TOKEN", "pd-rest-token")
    monkeypatch.setenv("TEST_OG_KEY", "og-api-key")


def pd_schedules(pagerduty: FakePagerDuty, cache_seconds: float = 600) -> Schedules:
    schedules = {
        "primary": {"source": {"kind": "pagerduty", "schedule_id": "PSCHED1"}},
        "level-two": {
            "source": {
                "kind": "pagerduty",
                "escalation_policy_id": "PEP0001",
                "escalation_level": 2,
            },
        },
    }
    config = settings(pagerduty, **schedules).model_copy(update={"cache_seconds": cache_seconds})
    return build_schedules(config, transport=LazyTransport)


def labels(roster: Roster) -> list[str]:
    return [person.label() for person in roster.people]


# -- PagerDuty


def test_pagerduty_is_asked_who_is_on_call_at_that_moment(pagerduty: FakePagerDuty) -> None:
    schedules = pd_schedules(pagerduty)
    roster = run(lambda: schedules.roster("primary", at(0)))
    assert (roster.kind, labels(roster), roster.stale, roster.error) == (
        "pagerduty", ["Bob Builder"], False, "",
    )  # fmt: skip
    assert roster.people[0] == OnCallPerson("PBOB001", "Bob Builder", "Bob@Example.com")
    assert roster.until == at(5)  # the end of bob's shift
    assert roster.source == "PagerDuty schedule PSCHED1"
    (asked,) = pagerduty.requests("/oncalls")
    assert asked.query["schedule_ids[]"] == ["PSCHED1"]
    assert asked.query["since"] == asked.query["until"] == ["2025-03-01T12:00:00+00:00"]
    assert asked.query["include[]"] == ["users"] and asked.query["time_zone"] == ["UTC"]
    assert asked.headers["authorization"] == "Token token=pd-rest-token"


def test_an_escalation_policy_level_is_its_own_schedule(pagerduty: FakePagerDuty) -> None:
    schedules = pd_schedules(pagerduty)
    roster = run(lambda: schedules.roster("level-two", at(0)))
    assert labels(roster) == ["Dave Boss"] and roster.until is None
    (asked,) = pagerduty.requests("/oncalls")
    assert asked.query["escalation_policy_ids[]"] == ["PEP0001"]


def test_every_page_of_on_calls_is_read(pagerduty: FakePagerDuty) -> None:
    crowd = [PdUser(f"PU{n:05d}", f"Person {n}", f"p{n}@example.com") for n in range(130)]
    pagerduty.oncalls = [PdOnCall(u, None, None, schedule="PSCHED1") for u in crowd]
    roster = run(lambda: pd_schedules(pagerduty).roster("primary", at(0)))
    assert len(roster.people) == 130
    offsets = [s.query["offset"] for s in pagerduty.requests("/oncalls")]
    assert offsets == [["0"], ["100"]]


def test_the_answer_is_reused_until_its_time_to_live_or_the_end_of_a_shift(
    pagerduty: FakePagerDuty,
) -> None:
    schedules = pd_schedules(pagerduty)

    async def asks() -> list[list[str]]:
        seen = []
        for minute in (0, 1, 4.9, 5, 6, 14.9, 15):  # bob's shift ends at 5; a 10 minutes TTL
            seen.append(labels(await schedules.roster("primary", at(minute))))
        return seen

    assert run(asks) == [["Bob Builder"]] * 3 + [["Alice Ops"]] * 4
    assert len(pagerduty.requests("/oncalls")) == 3  # at 0, at 5 (shift end), at 15 (TTL)


def test_concurrent_askers_share_one_request(pagerduty: FakePagerDuty) -> None:
    schedules = pd_schedules(pagerduty)

    async def together() -> list[Roster]:
        return list(await asyncio.gather(*(schedules.roster("primary", at(0)) for _ in range(8))))

    assert {tuple(labels(r)) for r in run(together)} == {("Bob Builder",)}
    assert len(pagerduty.requests("/oncalls")) == 1


def test_a_failing_service_is_used_stale_until_a_shift_in_it_ends(
    pagerduty: FakePagerDuty,
) -> None:
    schedules = pd_schedules(pagerduty, cache_seconds=60)

    async def story() -> list[Roster]:
        first = await schedules.roster("primary", at(0))
        pagerduty.down = True
        stale = await schedules.roster("primary", at(2))  # past the 1 minute TTL
        later = await schedules.roster("primary", at(2.1))  # within the pause after a failure
        ended = await schedules.roster("primary", at(5))  # bob's shift is over: not bob
        return [first, stale, later, ended]

    first, stale, later, ended = run(story)
    assert not first.stale
    assert stale.stale and labels(stale) == ["Bob Builder"] and stale.as_of == at(0)
    assert stale.error == "PagerDuty answered HTTP 503"
    assert later == stale
    assert labels(ended) == [] and not ended.stale and ended.error == stale.error
    # asked at 0, at 2, not at 2.1 (a failure pauses asking), at 5
    assert len(pagerduty.requests("/oncalls")) == 3


def test_a_stale_answer_is_used_for_stale_seconds_at_most(pagerduty: FakePagerDuty) -> None:
    schedules = pd_schedules(pagerduty, cache_seconds=60)

    async def story() -> list[Roster]:
        first = await schedules.roster("level-two", at(0))  # dave: no end
        pagerduty.down = True
        return [first, await schedules.roster("level-two", at(30)),
                await schedules.roster("level-two", at(30.5))]  # fmt: skip

    first, stale, expired = run(story)
    assert labels(first) == labels(stale) == ["Dave Boss"] and stale.stale
    assert labels(expired) == [] and expired.error == "PagerDuty answered HTTP 503"


def test_with_no_answer_ever_nobody_is_on_call(pagerduty: FakePagerDuty) -> None:
    pagerduty.down = True
    roster = run(lambda: pd_schedules(pagerduty).roster("primary", at(0)))
    assert roster.people == () and not roster.stale and "HTTP 503" in roster.error


def test_a_refused_token_is_said(pagerduty: FakePagerDuty) -> None:
    pagerduty.token = "another"
    roster = run(lambda: pd_schedules(pagerduty).roster("primary", at(0)))
    assert roster.people == () and roster.error == "PagerDuty refused the credentials (HTTP 401)"


def test_an_unreachable_service_is_said() -> None:
    with FakePagerDuty() as gone:
        url = gone.url  # closed again: refused from now on
    schedules = build_schedules(
        OnCallSettings.model_validate(
            {
                "pagerduty": {"api_url": url, "token_env": "TEST_PD_TOKEN"},
                "schedules": {"p": {"source": {"kind": "pagerduty", "schedule_id": "P1"}}},
            }
        ),
        transport=LazyTransport,
    )
    roster = run(lambda: schedules.roster("p", at(0)))
    assert roster.people == () and roster.error.startswith("PagerDuty could not be reached")


# -- Opsgenie


def opsgenie_schedules(opsgenie: FakeOpsgenie, schedule: str = "platform_schedule") -> Schedules:
    return build_schedules(
        OnCallSettings.model_validate(
            {
                "opsgenie": {"api_url": opsgenie.url, "api_key_env": "TEST_OG_KEY"},
                "schedules": {"og": {"source": {"kind": "opsgenie", "schedule": schedule}}},
            }
        ),
        transport=LazyTransport,
    )


def test_opsgenie_is_asked_for_the_schedule_by_name(opsgenie: FakeOpsgenie) -> None:
    roster = run(lambda: opsgenie_schedules(opsgenie).roster("og", at(0)))
    assert labels(roster) == ["alice@example.com", "bob@example.com"]
    assert roster.source == "Opsgenie schedule platform_schedule"
    (asked,) = opsgenie.seen
    assert asked.path == "/v2/schedules/platform_schedule/on-calls"
    assert asked.query == {
        "scheduleIdentifierType": ["name"],
        "flat": ["true"],
        "date": ["2025-03-01T12:00:00+00:00"],
    }
    assert asked.headers["authorization"] == "GenieKey og-api-key"


def test_an_unknown_opsgenie_schedule_is_said(opsgenie: FakeOpsgenie) -> None:
    roster = run(lambda: opsgenie_schedules(opsgenie, "nope").roster("og", at(0)))
    assert roster.people == () and roster.error == "Opsgenie has no schedule nope"


# -- the rotation file through Schedules


ROTATIONS = """\
rotations:
  primary:
    every: day
    hand_off: "12:05"
    time_zone: UTC
    start: 2025-02-28
    people: [bob, alice]
"""


def test_a_rotation_is_computed_afresh_and_a_bad_edit_keeps_the_last_good_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "oncall.yaml"
    path.write_text(ROTATIONS)
    schedules = build_schedules(OnCallSettings(rotations=path), transport=LazyTransport)
    assert schedules.known("primary") and not schedules.known("secondary")
    assert labels(run(lambda: schedules.roster("primary", at(4)))) == ["bob"]
    assert labels(run(lambda: schedules.roster("primary", at(5)))) == ["alice"]
    path.write_text(ROTATIONS.replace("[bob, alice]", "[carol, dave, erin]"))
    assert labels(run(lambda: schedules.roster("primary", at(5)))) == ["dave"]
    path.write_text(ROTATIONS.replace("every: day", "every: fortnight"))
    kept = run(lambda: schedules.roster("primary", at(5)))
    assert labels(kept) == ["dave"] and kept.stale
    assert "rotations.primary.every" in kept.error and "using the last good file" in kept.error


def test_an_unknown_schedule_has_nobody(tmp_path: Path) -> None:
    schedules = Schedules({})
    roster = run(lambda: schedules.roster("ghost", at(0)))
    assert roster.kind == "none" and roster.people == ()
    assert "no schedule ghost is configured" in roster.error


# -- configuration problems, found at start-up


@pytest.mark.parametrize(
    ("schedules", "said"),
    [
        ({"a": {"escalate_to": "b"}}, "schedule a escalates to b, which is neither"),
        ({"a": {"source": {"kind": "rotation", "rotation": "zzz"}}}, "has none; add it"),
        (
            {"a": {"source": {"kind": "pagerduty", "schedule_id": "P1"}}},
            "the environment variable UNSET_TOKEN_VARIABLE is empty or unset",
        ),
    ],
)
def test_a_bad_configuration_stops_start_up_in_one_line(
    tmp_path: Path, schedules: dict[str, Any], said: str
) -> None:
    path = tmp_path / "oncall.yaml"
    path.write_text(ROTATIONS.replace("primary", "a"))
    config = OnCallSettings.model_validate(
        {
            "rotations": str(path),
            "schedules": schedules,
            "pagerduty": {"token_env": "UNSET_TOKEN_VARIABLE"},
        }
    )
    with pytest.raises(OnCallConfigError) as raised:
        build_schedules(config, transport=LazyTransport)
    assert said in str(raised.value) and "\n" not in str(raised.value)


def test_a_schedule_reading_pagerduty_needs_its_token() -> None:
    with pytest.raises(ValueError, match=r"give oncall\.pagerduty\.token_file or token_env"):
        OnCallSettings.model_validate(
            {"schedules": {"p": {"source": {"kind": "pagerduty", "schedule_id": "P1"}}}}
        )


# -- who among the approvers that is


def test_people_on_call_are_approvers_through_their_links() -> None:
    roster = Roster(
        "primary", "pagerduty", "PagerDuty schedule P", (
            OnCallPerson("PBOB001", "Bob Builder", "Bob@Example.com"),
            OnCallPerson("PALICE1", "Alice Ops", "alice@example.com"),
            OnCallPerson("PZED001", "Zed Stranger", "zed@example.com"),
        ), T0,
    )  # fmt: skip
    links = [
        ApproverLink(approver="bob", kind="pagerduty", external_id="bob@example.com",
                     created_at=T0),  # an email, matched without case
        ApproverLink(approver="alice", kind="pagerduty", external_id="PALICE1", created_at=T0),
        ApproverLink(approver="zed", kind="opsgenie", external_id="zed@example.com",
                     created_at=T0),  # another kind: no match
    ]  # fmt: skip
    assert approvers_on_call(roster, links) == (("bob", "alice"), ("Zed Stranger",))
    rotation = Roster("r", "rotation", "rotation r", (OnCallPerson("bob"), OnCallPerson("x")), T0)
    assert approvers_on_call(rotation, [], ["bob", "alice"]) == (("bob",), ("x",))

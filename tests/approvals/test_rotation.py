"""The local rotation file: weekly and daily hand-offs at a wall-clock time in a time
zone (daylight saving time included), overrides, nothing before the start, and the file's
mistakes said in one line."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from guardproxy.approvals.rotation import (
    Rotation,
    RotationError,
    load_rotations,
    on_call_at,
)

BERLIN = ZoneInfo("Europe/Berlin")


def weekly(**overrides: object) -> Rotation:
    values: dict[str, object] = {
        "every": "week",
        "hand_off": "09:00",
        "time_zone": "Europe/Berlin",
        "start": date(2025, 1, 6),  # a Monday
        "people": ["alice", "bob", "carol"],
    }
    values.update(overrides)
    return Rotation.model_validate(values)


def berlin(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN)


def who(rotation: Rotation, at: datetime) -> tuple[str, ...]:
    return on_call_at(rotation, at).people


def test_a_weekly_rotation_hands_off_at_the_wall_clock_time() -> None:
    rotation = weekly()
    assert who(rotation, berlin(2025, 1, 6, 9, 0)) == ("alice",)
    assert who(rotation, berlin(2025, 1, 13, 8, 59, 59)) == ("alice",)
    assert who(rotation, berlin(2025, 1, 13, 9, 0)) == ("bob",)
    assert who(rotation, berlin(2025, 1, 19, 23, 0)) == ("bob",)
    assert who(rotation, berlin(2025, 1, 20, 9, 0)) == ("carol",)
    assert who(rotation, berlin(2025, 1, 27, 9, 0)) == ("alice",)  # round again
    shift = on_call_at(rotation, berlin(2025, 1, 8, 12, 0))
    assert shift.until == berlin(2025, 1, 13, 9, 0)
    # the same instant in UTC is the same answer
    assert who(rotation, datetime(2025, 1, 13, 8, 0, tzinfo=UTC)) == ("bob",)
    assert who(rotation, datetime(2025, 1, 13, 7, 59, tzinfo=UTC)) == ("alice",)


def test_the_hand_off_stays_at_nine_on_the_wall_across_daylight_saving_time() -> None:
    rotation = weekly(start=date(2025, 3, 24))  # the Monday before Berlin's change on 30 March
    # 31 March 09:00 in Berlin is 07:00 UTC (summer time), a week earlier 08:00 UTC
    assert who(rotation, datetime(2025, 3, 24, 8, 0, tzinfo=UTC)) == ("alice",)
    assert who(rotation, datetime(2025, 3, 31, 6, 59, tzinfo=UTC)) == ("alice",)
    assert who(rotation, datetime(2025, 3, 31, 7, 0, tzinfo=UTC)) == ("bob",)


def test_a_hand_off_time_the_change_skips_happens_at_the_change() -> None:
    rotation = weekly(every="day", hand_off="02:30", start=date(2025, 3, 28))
    # 30 March: 02:00 jumps to 03:00; the 02:30 hand-off happens at 03:00 (01:00 UTC)
    assert on_call_at(rotation, berlin(2025, 3, 29, 12, 0)).until == datetime(
        2025, 3, 30, 1, 0, tzinfo=UTC
    )
    assert who(rotation, datetime(2025, 3, 30, 0, 59, tzinfo=UTC)) == ("bob",)
    assert who(rotation, datetime(2025, 3, 30, 1, 0, tzinfo=UTC)) == ("carol",)


def test_a_daily_rotation_and_nobody_before_it_starts() -> None:
    rotation = weekly(every="day", hand_off="18:30", time_zone="UTC", start=date(2025, 3, 1))
    assert who(rotation, datetime(2025, 3, 1, 18, 29, tzinfo=UTC)) == ()
    before = on_call_at(rotation, datetime(2025, 2, 20, tzinfo=UTC))
    assert before.people == () and before.until == datetime(2025, 3, 1, 18, 30, tzinfo=UTC)
    assert who(rotation, datetime(2025, 3, 1, 18, 30, tzinfo=UTC)) == ("alice",)
    assert who(rotation, datetime(2025, 3, 2, 18, 29, tzinfo=UTC)) == ("alice",)
    assert who(rotation, datetime(2025, 3, 2, 18, 30, tzinfo=UTC)) == ("bob",)
    assert who(rotation, datetime(2025, 3, 4, 18, 30, tzinfo=UTC)) == ("alice",)


def test_an_override_replaces_the_shift_and_the_last_listed_wins() -> None:
    rotation = weekly(
        overrides=[
            {"person": "dave", "start": "2025-01-08T18:00", "end": "2025-01-09T09:00"},
            {"person": "erin", "start": "2025-01-09T07:00:00+00:00", "end": "2025-01-09T09:00"},
        ]
    )
    assert who(rotation, berlin(2025, 1, 8, 17, 59)) == ("alice",)
    shift = on_call_at(rotation, berlin(2025, 1, 8, 12, 0))
    assert shift.until == berlin(2025, 1, 8, 18, 0)  # the override starts first
    during = on_call_at(rotation, berlin(2025, 1, 8, 18, 0))
    assert during.people == ("dave",) and during.override
    assert during.until == berlin(2025, 1, 9, 8, 0)  # erin's starts (07:00 UTC)
    assert who(rotation, berlin(2025, 1, 9, 8, 30)) == ("erin",)  # both cover it: the last
    assert who(rotation, berlin(2025, 1, 9, 9, 0)) == ("alice",)


def test_on_call_at_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        on_call_at(weekly(), datetime(2025, 1, 8, 12, 0))


ROTATIONS = """\
rotations:
  platform-primary:
    every: week
    hand_off: "09:00"
    time_zone: Europe/Berlin
    start: 2025-01-06
    people: [alice, bob]
"""


def test_the_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "oncall.yaml"
    path.write_text(ROTATIONS)
    loaded = load_rotations(path)
    assert list(loaded.rotations) == ["platform-primary"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (ROTATIONS.replace("Europe/Berlin", "Europe/Atlantis"), "unknown time zone"),
        (ROTATIONS.replace('"09:00"', '"nine"'), "is not a time of day"),
        (ROTATIONS.replace("week", "fortnight"), "rotations.platform-primary.every"),
        (ROTATIONS.replace("[alice, bob]", "[]"), "rotations.platform-primary.people"),
        (ROTATIONS.replace("platform-primary", "Platform Primary"), "rotations.Platform Primary"),
        (ROTATIONS + "    shifts: 2\n", "shifts"),
        (ROTATIONS + "  bad: [\n", ":9:"),
        (
            ROTATIONS + "    overrides: [{person: dave, start: 2025-01-09T09:00, "
            "end: 2025-01-08T09:00}]\n",
            "override 1 (dave) ends before it starts",
        ),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_the_field(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "oncall.yaml"
    path.write_text(text)
    with pytest.raises(RotationError) as raised:
        load_rotations(path)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message and said in message


def test_a_missing_file_is_said(tmp_path: Path) -> None:
    with pytest.raises(RotationError, match="cannot read the rotation file"):
        load_rotations(tmp_path / "absent.yaml")


def test_through_a_year_it_is_always_the_person_whose_turn_it_is() -> None:
    """Against a slow, obvious count: hand-offs are the Mondays 09:00 local since start."""
    rotation = weekly()
    moment = datetime(2025, 1, 6, 0, 0, tzinfo=UTC)
    handoffs = [
        datetime(2025, 1, 6, 9, 0, tzinfo=BERLIN) + timedelta(days=7 * k) for k in range(60)
    ]
    # timedelta arithmetic on aware datetimes keeps the wall clock: each is 09:00 local
    while moment < datetime(2026, 1, 6, tzinfo=UTC):
        passed = sum(1 for h in handoffs if h <= moment)
        expected = () if passed == 0 else (rotation.people[(passed - 1) % 3],)
        assert who(rotation, moment) == expected, moment
        moment += timedelta(minutes=97)

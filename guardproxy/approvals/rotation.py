"""The local rotation file: who is on call, computed from a YAML file and the time.

The embedded schedule source, for teams without PagerDuty or Opsgenie (and for tests)::

    rotations:
      platform-primary:
        every: week              # or: day
        hand_off: "09:00"        # wall-clock time of the hand-off, in time_zone
        time_zone: Europe/Berlin
        start: 2025-01-06        # the first shift starts on this date at hand_off
        people: [alice, bob, carol]   # approver names, in turn
        overrides:
          - {person: dave, start: "2025-01-08T18:00", end: "2025-01-09T09:00"}

A weekly rotation hands off every seven days from ``start`` (so on its weekday), a daily
one every day, at ``hand_off`` local time (daylight saving time included: the hand-off
stays at 09:00 on the wall). Before ``start`` nobody is on call. An override puts
``person`` on call from ``start`` up to ``end`` (local time unless it has an offset);
where overrides overlap, the last listed wins.

Pure: :func:`on_call_at` reads nothing but its arguments, so a test sets the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from guardproxy.approvals.settings import SCHEDULE_NAME

__all__ = [
    "Override",
    "Rotation",
    "RotationError",
    "RotationFile",
    "Shift",
    "load_rotations",
    "on_call_at",
]

PERSON = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$"
"""An approver's name (as `guardproxy approvers add` takes it)."""


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin or UTC"
        ) from None
    return name


def _clock_time(text: str) -> str:
    try:
        time.fromisoformat(text)
    except ValueError:
        raise ValueError(f'hand_off {text!r} is not a time of day; write e.g. "09:00"') from None
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Override(_Strict):
    person: Annotated[str, Field(pattern=PERSON)]
    start: datetime
    end: datetime


class Rotation(_Strict):
    every: Literal["week", "day"]
    hand_off: Annotated[str, AfterValidator(_clock_time)] = "09:00"
    time_zone: Annotated[str, AfterValidator(_zone)] = "UTC"
    start: date
    people: list[Annotated[str, Field(pattern=PERSON)]] = Field(min_length=1)
    overrides: list[Override] = Field(default_factory=list)

    @model_validator(mode="after")
    def _overrides_end_after_start(self) -> Rotation:
        for number, override in enumerate(self.overrides, start=1):
            if self._at(override.end) <= self._at(override.start):
                raise ValueError(f"override {number} ({override.person}) ends before it starts")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def _at(self, moment: datetime) -> datetime:
        """``moment`` as an aware datetime: naive ones are local to the rotation."""
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=self.zone)


class RotationFile(_Strict):
    rotations: dict[Annotated[str, Field(pattern=SCHEDULE_NAME)], Rotation]


@dataclass(frozen=True, slots=True)
class Shift:
    """Who is on call at a moment, and until when that stays so."""

    people: tuple[str, ...]
    until: datetime | None
    """The next hand-off or override boundary (None: no change ahead)."""
    override: bool = False


def on_call_at(rotation: Rotation, at: datetime) -> Shift:
    """Who ``rotation`` puts on call at ``at`` (an aware datetime)."""
    if at.tzinfo is None:
        raise ValueError("on_call_at needs an aware datetime")
    zone = rotation.zone
    boundaries: list[datetime] = []
    person: str | None = None
    overridden = False
    for override in rotation.overrides:
        start, end = rotation._at(override.start), rotation._at(override.end)
        if start <= at < end:
            person, overridden = override.person, True  # the last listed wins
            boundaries.append(end)
        elif at < start:
            boundaries.append(start)
    hand_off = time.fromisoformat(rotation.hand_off)
    length = 7 if rotation.every == "week" else 1
    local = _local(at, zone)
    # the date of the latest hand-off time on the wall clock, then whole shifts since start
    day = local.date() if local.time() >= hand_off else local.date() - timedelta(days=1)
    elapsed = (day - rotation.start).days
    shift = elapsed // length
    if elapsed < 0:
        boundaries.append(_wall(rotation.start, hand_off, zone))
    else:
        if person is None:
            person = rotation.people[shift % len(rotation.people)]
        next_day = rotation.start + timedelta(days=(shift + 1) * length)
        boundaries.append(_wall(next_day, hand_off, zone))
    later = [b for b in boundaries if b > at]
    return Shift(
        people=(person,) if person is not None else (),
        until=min(later) if later else None,
        override=overridden,
    )


def _wall(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The first instant the wall clock in ``zone`` shows ``clock`` or later on ``day``: a
    time a daylight saving change skips is handed off at the change itself."""
    naive = datetime.combine(day, clock)
    aware = naive.replace(tzinfo=zone)
    if _local(aware, zone) == naive:
        return aware
    # in a gap: fold=1 reads it with the offset after the change (an earlier instant),
    # fold=0 with the offset before it (a later one); the change lies between
    low = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = aware.astimezone(UTC)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if _local(middle, zone) >= naive:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0).astimezone(zone)


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    """The wall time of ``moment`` in ``zone`` (through UTC: ``astimezone`` leaves a time
    already in ``zone`` as it is, even one a change skips)."""
    return moment.astimezone(UTC).astimezone(zone).replace(tzinfo=None)


class RotationError(Exception):
    """The rotation file cannot be used; one line saying where and what to do."""


def load_rotations(path: Path) -> RotationFile:
    """The rotation file at ``path``; :class:`RotationError` naming the file and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise RotationError(f"cannot read the rotation file {path}: {reason}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise RotationError(f"{where}: {problem}; fix the YAML") from None
    try:
        return RotationFile.model_validate(data if data is not None else {})
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "the file"
        raise RotationError(
            f"{path}: {field}: {first['msg']} ({error.error_count()} problem"
            f"{'s' if error.error_count() > 1 else ''}); see the README, On-call routing"
        ) from None

"""Who is on call in a named schedule, now: the local rotation file, PagerDuty or Opsgenie.

Each configured schedule has a source (:class:`ScheduleSource`). :class:`Schedules` asks
it at a given moment (the caller's clock) and keeps the answer for ``cache_seconds``, or
until the end of a shift in it, whichever comes first. When a service cannot be reached,
the last answer is used for ``stale_seconds`` more, marked stale (the console, the CLI
and Slack say so), but never past the end of a shift in it; after that, or with no
answer ever, nobody is on call there, so an ``oncall:`` group fails closed: nobody gains
approval rights from a failure.

Sources, written to the services' public documentation:

* rotation: :mod:`guardproxy.approvals.rotation`, computed from the file at each moment
  (never cached; the file is read again when it changes, and an invalid change keeps the
  last good one, shown as stale).
* PagerDuty REST API, ``GET /oncalls`` (List all of the on-calls) with ``since`` and
  ``until`` both the moment asked about, ``time_zone=UTC``, ``include[]=users`` (for
  emails), ``schedule_ids[]`` or ``escalation_policy_ids[]``, paged by ``limit`` /
  ``offset`` while ``more``; headers ``Authorization: Token token=<token>`` and
  ``Accept: application/vnd.pagerduty+json;version=2``. Each on-call names a ``user``,
  its ``schedule``, ``escalation_level``, ``start`` and ``end`` (null: permanent).
* Opsgenie Who Is On Call API, ``GET /v2/schedules/{identifier}/on-calls`` with
  ``scheduleIdentifierType`` (id or name), ``flat=true`` (usernames in
  ``data.onCallRecipients``) and ``date``; header ``Authorization: GenieKey <key>``.
"""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import structlog

from guardproxy.approvals.rotation import RotationError, RotationFile, load_rotations, on_call_at
from guardproxy.approvals.settings import (
    OnCallSettings,
    OpsgenieSourceSettings,
    PagerDutySourceSettings,
    RotationSourceSettings,
)
from guardproxy.approvals.webapi import (
    ApiAnswer,
    ApiRequest,
    ApiTransport,
    SecretError,
    TransportError,
    api_url,
    read_secret,
)

__all__ = [
    "FAILURE_RETRY_SECONDS",
    "OnCallConfigError",
    "OnCallPerson",
    "OpsgenieSource",
    "PagerDutySource",
    "Reading",
    "Roster",
    "RotationFiles",
    "RotationSource",
    "ScheduleSource",
    "Schedules",
    "SourceError",
    "build_schedules",
]

log = structlog.get_logger(__name__)

FAILURE_RETRY_SECONDS = 15.0
"""After a failed read, a schedule's service is asked again no sooner than this (or
``cache_seconds`` if shorter): a down service is not asked on every verdict."""
PAGERDUTY_PAGE_LIMIT = 100
PAGERDUTY_MAX_PAGES = 20
PAGERDUTY_ACCEPT = "application/vnd.pagerduty+json;version=2"


class OnCallConfigError(Exception):
    """The on-call configuration cannot be used; one line saying what to change."""


class SourceError(Exception):
    """A schedule's source could not say who is on call (one line, no secret in it)."""


@dataclass(frozen=True, slots=True)
class OnCallPerson:
    """Someone a source puts on call: an approver name (rotation), a PagerDuty user id
    with name and email, an Opsgenie username."""

    id: str
    name: str = ""
    email: str = ""

    def label(self) -> str:
        return self.name or self.email or self.id


@dataclass(frozen=True, slots=True)
class Reading:
    """What a source said: who, until when that holds, and any warning (an invalid rotation
    file change: the last good file was used)."""

    people: tuple[OnCallPerson, ...]
    until: datetime | None = None
    warning: str = ""


@dataclass(frozen=True, slots=True)
class Roster:
    """Who is on call in one schedule, as of a moment, and how sure that is."""

    schedule: str
    kind: str
    """``rotation``, ``pagerduty`` or ``opsgenie`` (which identities ``people`` are), or
    ``none`` for a schedule nobody configured."""
    source: str
    """For people: ``rotation platform-primary (oncall.yaml)``, ``PagerDuty schedule P1``."""
    people: tuple[OnCallPerson, ...]
    as_of: datetime
    until: datetime | None = None
    stale: bool = False
    """The source failed; this is its last answer, from ``as_of``."""
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "kind": self.kind,
            "source": self.source,
            "people": [person.label() for person in self.people],
            "as_of": self.as_of.isoformat(),
            "until": self.until.isoformat() if self.until else None,
            "stale": self.stale,
            "error": self.error,
        }


# ------------------------------------------------------------------- sources


class ScheduleSource(ABC):
    kind: ClassVar[str]
    cached: ClassVar[bool] = True
    """Whether answers are reused (a rotation is computed afresh every time)."""

    @property
    @abstractmethod
    def description(self) -> str: ...

    @abstractmethod
    async def read(self, at: datetime) -> Reading:
        """Who is on call at ``at``; :class:`SourceError` when it cannot be known."""


class RotationFiles:
    """The rotation file, read again when it changes (size or modification time); a
    change that does not load keeps the last good file, with the problem as a warning."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loaded: RotationFile | None = None
        self._stamp: tuple[int, int] | None = None
        self._problem = ""

    def current(self) -> tuple[RotationFile | None, str]:
        """The rotations in force and the problem with the file on disk ("" if none)."""
        try:
            info = os.stat(self.path)
            stamp = (info.st_mtime_ns, info.st_size)
        except OSError as error:
            return self._loaded, f"cannot read the rotation file {self.path}: {error.strerror}"
        if stamp != self._stamp:
            try:
                self._loaded = load_rotations(self.path)
                self._problem = ""
            except RotationError as error:
                self._problem = str(error)
                log.error("oncall.rotation_file_invalid", error=self._problem)
            self._stamp = stamp
        return self._loaded, self._problem


class RotationSource(ScheduleSource):
    kind = "rotation"
    cached = False

    def __init__(self, files: RotationFiles, rotation: str) -> None:
        self._files = files
        self._rotation = rotation

    @property
    def description(self) -> str:
        return f"rotation {self._rotation} ({self._files.path.name})"

    async def read(self, at: datetime) -> Reading:
        rotations, problem = self._files.current()
        if rotations is None:
            raise SourceError(problem or f"no rotation file {self._files.path}")
        rotation = rotations.rotations.get(self._rotation)
        if rotation is None:
            raise SourceError(f"the rotation file {self._files.path} has no {self._rotation}")
        shift = on_call_at(rotation, at)
        warning = f"{problem}; using the last good file" if problem else ""
        return Reading(tuple(OnCallPerson(p) for p in shift.people), shift.until, warning)


def _instant(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _answer_json(answer: ApiAnswer, service: str) -> Any:
    if answer.status in (401, 403):
        raise SourceError(f"{service} refused the credentials (HTTP {answer.status})")
    if answer.status == 429:
        raise SourceError(f"{service} is rate limiting (HTTP 429)")
    if not answer.ok:
        raise SourceError(f"{service} answered HTTP {answer.status}")
    try:
        return answer.json()
    except ValueError:
        raise SourceError(f"{service} answered something that is not JSON") from None


class PagerDutySource(ScheduleSource):
    kind = "pagerduty"

    def __init__(
        self,
        settings: PagerDutySourceSettings,
        *,
        api: str,
        token: str,
        transport: ApiTransport,
        timeout: float,
    ) -> None:
        self._settings = settings
        self._api = api
        self._token = token
        self._transport = transport
        self._timeout = timeout

    @property
    def description(self) -> str:
        if self._settings.schedule_id is not None:
            return f"PagerDuty schedule {self._settings.schedule_id}"
        return (
            f"PagerDuty escalation policy {self._settings.escalation_policy_id} "
            f"level {self._settings.escalation_level}"
        )

    async def read(self, at: datetime) -> Reading:
        moment = at.astimezone(UTC).isoformat()
        target = (
            ("schedule_ids[]", self._settings.schedule_id)
            if self._settings.schedule_id is not None
            else ("escalation_policy_ids[]", self._settings.escalation_policy_id or "")
        )
        people: dict[str, OnCallPerson] = {}
        ends: list[datetime] = []
        for number in range(PAGERDUTY_MAX_PAGES):
            query = [
                target, ("include[]", "users"), ("since", moment), ("until", moment),
                ("time_zone", "UTC"), ("limit", str(PAGERDUTY_PAGE_LIMIT)),
                ("offset", str(number * PAGERDUTY_PAGE_LIMIT)),
            ]  # fmt: skip
            request = ApiRequest(
                "GET",
                api_url(self._api, "/oncalls", query),
                {"Accept": PAGERDUTY_ACCEPT, "Authorization": f"Token token={self._token}"},
                timeout=self._timeout,
            )
            try:
                answer = await self._transport.send(request)
            except TransportError as error:
                raise SourceError(f"PagerDuty could not be reached: {error}") from None
            data = _answer_json(answer, "PagerDuty")
            if not isinstance(data, dict) or not isinstance(data.get("oncalls"), list):
                raise SourceError("PagerDuty's answer has no oncalls list")
            for entry in data["oncalls"]:
                self._take(entry, at, people, ends)
            if not data.get("more"):
                break
        return Reading(tuple(people.values()), min(ends) if ends else None)

    def _take(
        self, entry: Any, at: datetime, people: dict[str, OnCallPerson], ends: list[datetime]
    ) -> None:
        """Keep ``entry``'s user if the on-call is this schedule's (or this level's) and
        covers ``at``."""
        if not isinstance(entry, dict) or not isinstance(entry.get("user"), dict):
            return
        settings = self._settings
        if settings.schedule_id is not None:
            schedule = entry.get("schedule")
            if not isinstance(schedule, dict) or schedule.get("id") != settings.schedule_id:
                return
        elif entry.get("escalation_level") != settings.escalation_level:
            return
        start, end = _instant(entry.get("start")), _instant(entry.get("end"))
        if (start is not None and at < start) or (end is not None and at >= end):
            return
        user = entry["user"]
        user_id = str(user.get("id") or "")
        if not user_id:
            return
        people.setdefault(
            user_id,
            OnCallPerson(
                user_id,
                name=str(user.get("name") or user.get("summary") or ""),
                email=str(user.get("email") or ""),
            ),
        )
        if end is not None:
            ends.append(end)


class OpsgenieSource(ScheduleSource):
    kind = "opsgenie"

    def __init__(
        self,
        settings: OpsgenieSourceSettings,
        *,
        api: str,
        key: str,
        transport: ApiTransport,
        timeout: float,
    ) -> None:
        self._settings = settings
        self._api = api
        self._key = key
        self._transport = transport
        self._timeout = timeout

    @property
    def description(self) -> str:
        return f"Opsgenie schedule {self._settings.schedule}"

    async def read(self, at: datetime) -> Reading:
        query = [
            ("scheduleIdentifierType", self._settings.identifier_type),
            ("flat", "true"),
            ("date", at.astimezone(UTC).isoformat(timespec="seconds")),
        ]
        path = f"/v2/schedules/{quote(self._settings.schedule, safe='')}/on-calls"
        request = ApiRequest(
            "GET",
            api_url(self._api, path, query),
            {"Authorization": f"GenieKey {self._key}"},
            timeout=self._timeout,
        )
        try:
            answer = await self._transport.send(request)
        except TransportError as error:
            raise SourceError(f"Opsgenie could not be reached: {error}") from None
        if answer.status == 404:
            raise SourceError(f"Opsgenie has no schedule {self._settings.schedule}")
        data = _answer_json(answer, "Opsgenie")
        body = data.get("data") if isinstance(data, dict) else None
        recipients = body.get("onCallRecipients") if isinstance(body, dict) else None
        if not isinstance(recipients, list):
            raise SourceError("Opsgenie's answer has no data.onCallRecipients")
        names = dict.fromkeys(str(r) for r in recipients if isinstance(r, str) and r)
        return Reading(tuple(OnCallPerson(name, email=name) for name in names))


# ----------------------------------------------------------------- schedules


@dataclass(slots=True)
class _Cached:
    roster: Roster
    """What the schedule's readers get now."""
    good: Roster | None
    """The last answer the source gave (the stale fallback)."""
    failed_at: datetime | None = None
    """Set after a failure: ``roster`` (stale or empty) stands until ``retry_at``."""
    retry_at: datetime | None = None


class Schedules:
    """Every schedule by name, asked through a cache with a stale fallback."""

    def __init__(
        self,
        sources: Mapping[str, ScheduleSource],
        *,
        rotations: RotationFiles | None = None,
        escalations: Mapping[str, str] | None = None,
        cache_seconds: float = 60.0,
        stale_seconds: float = 3600.0,
    ) -> None:
        """``sources``: the configured schedules; any other name is a rotation of that
        name in ``rotations``, if given. ``escalations``: each schedule's next level."""
        self._sources = dict(sources)
        self._rotations = rotations
        self._escalations = dict(escalations or {})
        self._cache_for = timedelta(seconds=cache_seconds)
        self._stale_for = timedelta(seconds=stale_seconds)
        self._cache: dict[str, _Cached] = {}
        self._reading: dict[str, asyncio.Future[Roster]] = {}

    def source(self, name: str) -> ScheduleSource | None:
        found = self._sources.get(name)
        if found is None and self._rotations is not None:
            rotations, _ = self._rotations.current()
            if rotations is not None and name in rotations.rotations:
                found = self._sources[name] = RotationSource(self._rotations, name)
        return found

    def known(self, name: str) -> bool:
        return self.source(name) is not None

    def levels(self, name: str, count: int) -> list[str]:
        """``name`` and the schedules it escalates to, ``count`` levels at most."""
        chain = [name]
        while len(chain) < count:
            following = self._escalations.get(chain[-1])
            if following is None or following in chain:
                break
            chain.append(following)
        return chain

    async def rosters(self, names: Collection[str], at: datetime) -> dict[str, Roster]:
        unique = list(dict.fromkeys(names))
        found = await asyncio.gather(*(self.roster(name, at) for name in unique))
        return dict(zip(unique, found, strict=True))

    async def roster(self, name: str, at: datetime) -> Roster:
        """Who is on call in ``name`` at ``at``; never raises (see the module docstring)."""
        source = self.source(name)
        if source is None:
            return Roster(
                name, "none", "not configured", (), at,
                error=f"no schedule {name} is configured (oncall.schedules or the rotation "
                "file)",
            )  # fmt: skip
        if not source.cached:  # computed, no I/O: exactly at ``at``, never shared
            return await self._read(name, source, at)
        cached = self._cache.get(name)
        if cached is not None and self._usable(cached, at):
            return cached.roster
        reading = self._reading.get(name)
        if reading is None or reading.get_loop() is not asyncio.get_running_loop():
            reading = asyncio.ensure_future(self._read(name, source, at))
            self._reading[name] = reading
            reading.add_done_callback(lambda _: self._reading.pop(name, None))
        return await asyncio.shield(reading)

    def _usable(self, cached: _Cached, at: datetime) -> bool:
        if cached.failed_at is not None and cached.retry_at is not None:
            return cached.failed_at <= at < cached.retry_at
        roster = cached.roster
        if at < roster.as_of or at >= roster.as_of + self._cache_for:
            return False
        return roster.until is None or at < roster.until

    async def _read(self, name: str, source: ScheduleSource, at: datetime) -> Roster:
        try:
            reading = await source.read(at)
        except SourceError as error:
            return self._failed(name, source, at, str(error))
        except Exception as error:  # a bug in a source must not fail a verdict open
            log.exception("oncall.source_crashed", schedule=name)
            return self._failed(name, source, at, f"{type(error).__name__}: {error}")
        roster = Roster(
            name, source.kind, source.description, reading.people, at, reading.until,
            stale=bool(reading.warning), error=reading.warning,
        )  # fmt: skip
        if source.cached:
            self._cache[name] = _Cached(roster, roster)
        return roster

    def _failed(self, name: str, source: ScheduleSource, at: datetime, error: str) -> Roster:
        """The last good answer, stale, while it is young enough and no shift in it has
        ended (a known hand-off makes it wrong); else nobody."""
        log.warning("oncall.source_failed", schedule=name, source=source.description, error=error)
        previous = self._cache.get(name)
        good = previous.good if previous is not None else None
        if (
            good is not None
            and good.as_of <= at <= good.as_of + self._stale_for
            and (good.until is None or at < good.until)
        ):
            roster = replace(good, stale=True, error=error)
        else:
            roster = Roster(name, source.kind, source.description, (), at, error=error)
        if source.cached:
            retry_at = at + min(self._cache_for, timedelta(seconds=FAILURE_RETRY_SECONDS))
            self._cache[name] = _Cached(roster, good, at, retry_at)
        return roster


def build_schedules(
    settings: OnCallSettings,
    *,
    transport: Callable[[], ApiTransport],
) -> Schedules:
    """The schedules of ``settings``, secrets read and names checked now:
    :class:`OnCallConfigError` (one line) for anything that would fail later."""
    rotations = RotationFiles(settings.rotations) if settings.rotations is not None else None
    if rotations is not None:
        loaded, problem = rotations.current()
        if loaded is None:
            raise OnCallConfigError(problem)
    sources: dict[str, ScheduleSource] = {}
    shared = transport()
    try:
        for name, schedule in settings.schedules.items():
            sources[name] = _source(name, schedule.source, settings, rotations, shared)
    except SecretError as error:
        raise OnCallConfigError(str(error)) from None
    built = Schedules(
        sources,
        rotations=rotations,
        escalations={n: s.escalate_to for n, s in settings.schedules.items() if s.escalate_to},
        cache_seconds=settings.cache_seconds,
        stale_seconds=settings.stale_seconds,
    )
    for name, schedule in settings.schedules.items():
        if schedule.escalate_to is not None and not built.known(schedule.escalate_to):
            raise OnCallConfigError(
                f"schedule {name} escalates to {schedule.escalate_to}, which is neither in "
                "oncall.schedules nor a rotation in the rotation file"
            )
    return built


def _source(
    name: str,
    source: RotationSourceSettings | PagerDutySourceSettings | OpsgenieSourceSettings,
    settings: OnCallSettings,
    rotations: RotationFiles | None,
    transport: ApiTransport,
) -> ScheduleSource:
    timeout = settings.timeout_seconds
    if isinstance(source, RotationSourceSettings):
        rotation = source.rotation or name
        loaded = rotations.current()[0] if rotations is not None else None
        if loaded is None:
            raise OnCallConfigError(
                f"schedule {name} reads a rotation but there is no rotation file; set "
                "oncall.rotations"
            )
        if rotation not in loaded.rotations:
            raise OnCallConfigError(
                f"schedule {name} reads rotation {rotation}, but the rotation file "
                f"{settings.rotations} has none; add it there"
            )
        assert rotations is not None
        return RotationSource(rotations, rotation)
    if isinstance(source, PagerDutySourceSettings):
        pagerduty = settings.pagerduty
        assert pagerduty is not None  # OnCallSettings checked it
        token = read_secret(pagerduty.token_file, pagerduty.token_env, "oncall.pagerduty token")
        return PagerDutySource(
            source, api=pagerduty.api_url, token=token, transport=transport, timeout=timeout
        )
    opsgenie = settings.opsgenie
    assert opsgenie is not None
    key = read_secret(opsgenie.api_key_file, opsgenie.api_key_env, "oncall.opsgenie api key")
    return OpsgenieSource(
        source, api=opsgenie.api_url, key=key, transport=transport, timeout=timeout
    )

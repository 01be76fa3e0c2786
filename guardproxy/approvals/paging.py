"""Paging whoever is on call about a hold, and un-paging them once it is decided.

A hold rule's ``page: oncall:<schedule>`` pages that schedule when the hold is made
(level 1); when the hold escalates half-way to its time-out (``onTimeout: escalate``) the
schedule's next level (``escalate_to``) is paged too; when the hold is approved, denied
or expires, every page is resolved. Each page is claimed in the store before it is sent
(:meth:`~guardproxy.store.base.Store.claim_page`), and resolutions are claimed at once
(:meth:`~guardproxy.store.base.Store.claim_page_resolutions`): a page is triggered once
and resolved once per hold, whichever replica sees the event.

Pagers, written to the services' public documentation:

* :class:`PagerDutyPager`: Events API v2, ``POST /v2/enqueue`` with the routing key,
  ``event_action`` ``trigger`` (``payload.summary`` up to 1024 characters, ``source``,
  ``severity``, ``custom_details``, ``links``) or ``resolve``, and ``dedup_key`` the
  hold id, so a retried trigger opens no second incident and the resolve finds it.
  PagerDuty answers 202; 400 is an invalid event (not retried); 429 and 5xx are retried.
* :class:`OpsgeniePager`: Alert API, ``POST /v2/alerts`` (``message`` up to 130
  characters, ``alias`` the hold id, ``description``, ``responders``, ``details``) and
  ``POST /v2/alerts/{alias}/close?identifierType=alias``; header ``Authorization:
  GenieKey <key>``; Opsgenie answers 202.

Paging never decides anything: a page that cannot be sent is logged and shown with the
hold (console, CLI), which stays pending and approvable as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

import structlog

from guardproxy.approvals.channels import console_link
from guardproxy.approvals.events import HoldEvent
from guardproxy.approvals.notify import backoff_delay
from guardproxy.approvals.rules import requirement_of
from guardproxy.approvals.schedules import Schedules
from guardproxy.approvals.settings import (
    OnCallSettings,
    OpsgeniePagerSettings,
    PagerDutyPagerSettings,
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
from guardproxy.approvals.worker import HoldEventWorker
from guardproxy.policy.model import ONCALL_PREFIX
from guardproxy.store.base import Hold, HoldState, Page, Store, StoreError

__all__ = [
    "NO_PAGER",
    "OpsgeniePager",
    "PageContent",
    "PageFailed",
    "Pager",
    "PagerDutyPager",
    "Paging",
    "build_pagers",
    "dedup_key",
    "hold_impact",
]

log = structlog.get_logger(__name__)

NO_PAGER = "none"
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


class PageFailed(Exception):  # noqa: N818 - what happened to the page
    """The pager did not take the page; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True, slots=True)
class PageContent:
    """What a page says: the hold's summary, its impact line, where to decide it."""

    hold_id: str
    dedup_key: str
    summary: str
    impact: str
    session: str
    rules: tuple[str, ...]
    expires_at: datetime
    console_url: str
    schedule: str
    level: int


def hold_impact(hold: Hold) -> str:
    """One line on what the held request would do and why it is held:
    ``delete configmaps quorum-cm in prod (k8s, namespace default): <the rule's message>``."""
    try:
        action = json.loads(hold.action_json)
        decision = json.loads(hold.decision_json)
    except ValueError:
        return hold.summary
    resource = action.get("resource") or {}
    scope = action.get("scope") or {}
    what = " ".join(
        str(p) for p in (action.get("verb"), resource.get("type"), resource.get("name")) if p
    )
    environment = action.get("environment")
    if environment and environment != "unknown":
        what += f" in {environment}"
    where = [str(action.get("provider") or "")]
    where += [
        f"{k} {scope[k]}" for k in ("account", "project", "cluster", "namespace") if scope.get(k)
    ]
    line = f"{what or hold.summary} ({', '.join(w for w in where if w)})"
    message = str(decision.get("message") or "") if isinstance(decision, dict) else ""
    return f"{line}: {message}" if message else line


def dedup_key(hold_id: str, group_index: int, schedule: str, level: int) -> str:
    """The hold id for the first page of a hold (its first paged group, level 1); a
    longer key for any other, as Opsgenie merges alerts of one alias into one."""
    if group_index == 0 and level == 1:
        return hold_id
    return f"{hold_id}:{schedule}:{level}"


# ------------------------------------------------------------------- pagers


def _check(answer: ApiAnswer, service: str) -> None:
    if answer.ok:
        return
    detail = ""
    with contextlib.suppress(ValueError, AttributeError):
        body = answer.json()
        detail = str(body.get("message") or body.get("errors") or "")[:200]
    raise PageFailed(
        f"{service} answered HTTP {answer.status}{': ' + detail if detail else ''}",
        retry=answer.status in RETRYABLE,
    )


class Pager(ABC):
    kind: ClassVar[str]

    @abstractmethod
    async def trigger(self, content: PageContent) -> None:
        """Page; :class:`PageFailed` if the service did not take it."""

    @abstractmethod
    async def resolve(self, page: Page, reason: str) -> None:
        """Close the page's incident or alert; :class:`PageFailed` if not taken."""


class PagerDutyPager(Pager):
    kind = "pagerduty"

    def __init__(
        self,
        settings: PagerDutyPagerSettings,
        *,
        events_url: str,
        routing_key: str,
        transport: ApiTransport,
        timeout: float,
    ) -> None:
        self._settings = settings
        self._url = api_url(events_url, "/v2/enqueue")
        self._key = routing_key
        self._transport = transport
        self._timeout = timeout

    async def trigger(self, content: PageContent) -> None:
        summary = f"guardproxy: approve or deny {content.summary}"
        await self._send(
            {
                "routing_key": self._key,
                "event_action": "trigger",
                "dedup_key": content.dedup_key,
                "payload": {
                    "summary": summary[:1024],
                    "source": "guardproxy",
                    "severity": self._settings.severity,
                    "component": content.schedule,
                    "group": "guardproxy holds",
                    "class": "held request",
                    "custom_details": {
                        "impact": content.impact,
                        "hold": content.hold_id,
                        "session": content.session,
                        "rules": list(content.rules),
                        "expires_at": content.expires_at.isoformat(),
                        "level": content.level,
                        "decide": f"guardproxy approve {content.hold_id} --reason …, or the "
                        "console",
                    },
                },
                "links": [{"href": content.console_url, "text": "Open the hold in guardproxy"}],
                "client": "guardproxy",
                "client_url": content.console_url,
            }
        )

    async def resolve(self, page: Page, reason: str) -> None:
        await self._send(
            {"routing_key": self._key, "event_action": "resolve", "dedup_key": page.dedup_key}
        )

    async def _send(self, event: dict[str, Any]) -> None:
        request = ApiRequest(
            "POST",
            self._url,
            {"Content-Type": "application/json"},
            json.dumps(event).encode(),
            timeout=self._timeout,
        )
        try:
            answer = await self._transport.send(request)
        except TransportError as error:
            raise PageFailed(f"PagerDuty could not be reached: {error}", retry=True) from None
        _check(answer, "PagerDuty")


class OpsgeniePager(Pager):
    kind = "opsgenie"

    def __init__(
        self,
        settings: OpsgeniePagerSettings,
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

    async def trigger(self, content: PageContent) -> None:
        responders = [
            r.model_dump(exclude_none=True) for r in self._settings.responders
        ]  # {type, name|id|username}
        description = (
            f"{content.impact}\n\nHold {content.hold_id} of session {content.session}, "
            f"rules {', '.join(content.rules) or 'default'}; expires "
            f"{content.expires_at.isoformat()}.\nDecide it: {content.console_url}"
        )
        await self._send(
            api_url(self._api, "/v2/alerts"),
            {
                "message": f"guardproxy: approve or deny {content.summary}"[:130],
                "alias": content.dedup_key,
                "description": description[:15000],
                "responders": responders,
                "tags": ["guardproxy", "hold"],
                "details": {
                    "hold": content.hold_id,
                    "session": content.session,
                    "schedule": content.schedule,
                    "level": str(content.level),
                    "console": content.console_url,
                },
                "entity": content.hold_id,
                "source": "guardproxy",
                "priority": self._settings.priority,
            },
        )

    async def resolve(self, page: Page, reason: str) -> None:
        path = f"/v2/alerts/{quote(page.dedup_key, safe='')}/close"
        await self._send(
            api_url(self._api, path, [("identifierType", "alias")]),
            {"source": "guardproxy", "note": reason[:25000]},
        )

    async def _send(self, url: str, body: dict[str, Any]) -> None:
        request = ApiRequest(
            "POST",
            url,
            {"Content-Type": "application/json", "Authorization": f"GenieKey {self._key}"},
            json.dumps(body).encode(),
            timeout=self._timeout,
        )
        try:
            answer = await self._transport.send(request)
        except TransportError as error:
            raise PageFailed(f"Opsgenie could not be reached: {error}", retry=True) from None
        _check(answer, "Opsgenie")


def build_pagers(settings: OnCallSettings, transport: ApiTransport) -> dict[str, Pager]:
    """Each schedule's pager, secrets read now (:class:`SecretError` names what failed)."""
    pagers: dict[str, Pager] = {}
    for name, schedule in settings.schedules.items():
        pager = schedule.pager
        if isinstance(pager, PagerDutyPagerSettings):
            key = read_secret(
                pager.routing_key_file, pager.routing_key_env, f"schedule {name} routing key"
            )
            events = settings.pagerduty.events_url if settings.pagerduty else None
            pagers[name] = PagerDutyPager(
                pager,
                events_url=events or "https://events.pagerduty.com",
                routing_key=key,
                transport=transport,
                timeout=settings.timeout_seconds,
            )
        elif isinstance(pager, OpsgeniePagerSettings):
            opsgenie = settings.opsgenie
            if opsgenie is None:
                raise SecretError(f"schedule {name} pages through Opsgenie: add oncall.opsgenie")
            key = read_secret(opsgenie.api_key_file, opsgenie.api_key_env, "oncall.opsgenie")
            pagers[name] = OpsgeniePager(
                pager, api=opsgenie.api_url, key=key, transport=transport,
                timeout=settings.timeout_seconds,
            )  # fmt: skip
    return pagers


# ------------------------------------------------------------------- paging


class Paging(HoldEventWorker):
    """Pages on hold events: ``held`` pages level 1, ``escalated`` the next level, a
    decision or expiry resolves them. Events of one hold are handled in order; holds
    are handled side by side."""

    kinds = frozenset({"held", "escalated", "approved", "denied", "expired"})
    final_kinds = frozenset({"approved", "denied", "expired"})
    name = "page"

    def __init__(
        self,
        store: Store,
        schedules: Schedules,
        pagers: Mapping[str, Pager],
        *,
        clock: Callable[[], datetime],
        console_url: Callable[[], str],
        max_attempts: int = 5,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        super().__init__()
        self._store = store
        self._schedules = schedules
        self._pagers = dict(pagers)
        self._clock = clock
        self._console_url = console_url
        self._max_attempts = max_attempts
        self._backoff = (backoff_seconds, max_backoff_seconds)

    def pages_schedule(self, name: str) -> bool:
        return name in self._pagers

    async def work(self, event: HoldEvent) -> None:
        try:
            if event.kind == "held":
                await self._page(event.hold_id, escalate=False)
            elif event.kind == "escalated":
                await self._page(event.hold_id, escalate=True)
            else:
                await self._resolve(event.hold_id, f"hold {event.kind}: {event.reason}")
        except StoreError as error:
            log.error("page.store_failed", hold=event.hold_id, error=str(error))

    # -- trigger

    async def _page(self, hold_id: str, *, escalate: bool) -> None:
        hold = await asyncio.to_thread(self._store.get_hold, hold_id)
        if hold is None or hold.state is not HoldState.PENDING:
            return
        groups = requirement_of(hold).page
        if not groups:
            return
        pages = await asyncio.to_thread(self._store.list_pages, [hold_id])
        for index, group in enumerate(groups):
            reached = max((p.level for p in pages if p.oncall_group == group), default=0)
            level = reached + 1 if escalate else 1
            if escalate and reached == 0:
                level = 1  # its first page never went out: page level 1 now
            if not escalate and reached:
                continue
            chain = self._schedules.levels(group.removeprefix(ONCALL_PREFIX), level)
            if len(chain) < level:
                log.info("page.no_next_level", hold=hold_id, group=group, level=level)
                continue
            await self._trigger(hold, index, group, level, chain[level - 1])

    async def _trigger(self, hold: Hold, index: int, group: str, level: int, schedule: str) -> None:
        pager = self._pagers.get(schedule)
        key = dedup_key(hold.id, index, schedule, level)
        now = self._clock()
        claimed = await asyncio.to_thread(
            lambda: self._store.claim_page(
                hold.id, group, level, schedule=schedule,
                pager=pager.kind if pager else NO_PAGER, dedup_key=key, at=now,
            )
        )  # fmt: skip
        if claimed is None:
            return  # paged already, here or by another replica
        if pager is None:
            error = f"schedule {schedule} has no pager configured"
            await asyncio.to_thread(
                lambda: self._store.update_page(
                    hold.id, group, level, triggered_at=None, error=error
                )
            )
            log.warning("page.no_pager", hold=hold.id, schedule=schedule, level=level)
            return
        decision = json.loads(hold.decision_json)
        content = PageContent(
            hold_id=hold.id,
            dedup_key=key,
            summary=hold.summary,
            impact=hold_impact(hold),
            session=hold.session_id,
            rules=tuple(str(r) for r in decision.get("determining_rules") or []),
            expires_at=hold.expires_at,
            console_url=console_link(self._console_url(), hold.id),
            schedule=schedule,
            level=level,
        )
        error = await self._attempts(lambda: pager.trigger(content), hold.id, "trigger")
        triggered = None if error else self._clock()
        await asyncio.to_thread(
            lambda: self._store.update_page(
                hold.id, group, level, triggered_at=triggered, error=error
            )
        )
        if error:
            log.error("page.gave_up", hold=hold.id, schedule=schedule, level=level, error=error)
            return
        log.info("page.triggered", hold=hold.id, schedule=schedule, level=level, pager=pager.kind)
        # decided meanwhile (on another replica, before this trigger got through)?
        current = await asyncio.to_thread(self._store.list_pages, [hold.id])
        mine = [p for p in current if p.oncall_group == group and p.level == level]
        if mine and mine[0].resolved_at is not None:
            await self._send_resolve(mine[0], "the hold was decided while it was being paged")

    # -- resolve

    async def _resolve(self, hold_id: str, reason: str) -> None:
        now = self._clock()
        pages = await asyncio.to_thread(self._store.claim_page_resolutions, hold_id, now)
        for page in pages:
            if page.pager != NO_PAGER and (page.triggered_at is not None or not page.error):
                await self._send_resolve(page, reason)

    async def _send_resolve(self, page: Page, reason: str) -> None:
        pager = self._pagers.get(page.schedule)
        if pager is None:
            return
        error = await self._attempts(lambda: pager.resolve(page, reason), page.hold_id, "resolve")
        if error:
            log.error("page.resolve_failed", hold=page.hold_id, level=page.level, error=error)
        else:
            log.info("page.resolved", hold=page.hold_id, schedule=page.schedule, level=page.level)

    async def _attempts(self, send: Callable[[], Any], hold_id: str, what: str) -> str:
        """ "" once ``send`` succeeded, else the last error (after the retries)."""
        error = ""
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                await asyncio.sleep(backoff_delay(attempt - 1, *self._backoff))
            try:
                await send()
                return ""
            except PageFailed as failure:
                error = str(failure)
                log.info("page.attempt_failed", hold=hold_id, what=what, attempt=attempt,
                         error=error, retry=failure.retry)  # fmt: skip
                if not failure.retry:
                    return error
        return error

"""On-call routing: who is in a hold's ``oncall:`` groups now, and whether they were paged.

A schedule's source names people in its own terms (an approver name in the rotation
file, a PagerDuty user, an Opsgenie username); an approver is on call when the source
names them, or an identity linked to them (``guardproxy approvers link alice
--pagerduty alice@example.com``): PagerDuty users match on their id or email, Opsgenie
users on their username, case-insensitively. Someone on call whom no approver is linked
to is shown (``unlinked``) and gains nothing.

Eligibility follows the hold's pages: an ``oncall:`` group the hold paged and then
escalated also counts whoever is on call at the levels paged since (the schedule's
``escalate_to``), so the person an escalation wakes can decide.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from guardproxy.approvals.rules import OnCallGroup, OnCallNow, oncall_groups, requirement_of
from guardproxy.approvals.schedules import Roster, Schedules
from guardproxy.policy import Bundle
from guardproxy.policy.model import ONCALL_PREFIX, Approval
from guardproxy.store.base import ApproverLink, Hold, Page, Store

__all__ = ["OnCallRouting", "OnCallStatus", "approvers_on_call", "schedule_problems", "status_map"]


def approvers_on_call(
    roster: Roster, links: Sequence[ApproverLink], approvers: Iterable[str] = ()
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(approver names, labels of people no approver is linked to) of ``roster``.

    ``approvers``: the names of existing approvers, for a rotation (whose people are
    approver names); a name in the file that is no approver is unlinked."""
    if roster.kind == "rotation":
        known = set(approvers)
        found = [p.id for p in roster.people if p.id in known]
        return tuple(dict.fromkeys(found)), tuple(p.id for p in roster.people if p.id not in known)
    by_identity = {
        link.external_id.lower(): link.approver for link in links if link.kind == roster.kind
    }
    names: list[str] = []
    unlinked: list[str] = []
    for person in roster.people:
        keys = [person.id.lower()] + ([person.email.lower()] if person.email else [])
        matched = next((by_identity[k] for k in keys if k in by_identity), None)
        if matched is None:
            unlinked.append(person.label())
        else:
            names.append(matched)
    return tuple(dict.fromkeys(names)), tuple(unlinked)


@dataclass(frozen=True, slots=True)
class OnCallStatus:
    """One ``oncall:`` group of a hold: who is in it now, from which rosters, and the
    pages sent for it."""

    group: str
    levels: tuple[Roster, ...]
    """The schedule's roster, then each escalation level the hold reached."""
    approvers: tuple[str, ...]
    unlinked: tuple[str, ...]
    pages: tuple[Page, ...]

    @property
    def schedule(self) -> str:
        return self.group.removeprefix(ONCALL_PREFIX)

    @property
    def stale(self) -> bool:
        return any(roster.stale for roster in self.levels)

    def summary(self) -> str:
        """``alice (rotation platform-primary)``; ``nobody: <why>``; stale said so."""
        who = ", ".join(self.approvers)
        sources = ", ".join(r.source for r in self.levels)
        if who:
            text = f"{who} ({sources})"
        else:
            errors = "; ".join(r.error for r in self.levels if r.error)
            text = f"nobody ({errors or sources})"
        if self.unlinked:
            text += f"; on call but linked to no approver: {', '.join(self.unlinked)}"
        if self.stale:
            as_of = min(r.as_of for r in self.levels if r.stale)
            text += f" [stale: as of {as_of.isoformat(timespec='seconds')}]"
        return text

    def paged_text(self) -> str:
        """``paged 12:00:03Z via pagerduty (level 1)``, ``not paged``, or the failure."""
        if not self.pages:
            return "not paged"
        parts = []
        for page in self.pages:
            if page.triggered_at is not None:
                said = f"level {page.level} ({page.schedule}) paged via {page.pager} at "
                said += page.triggered_at.isoformat(timespec="seconds")
            elif page.error:
                said = f"level {page.level} ({page.schedule}) page failed: {page.error}"
            else:
                said = f"level {page.level} ({page.schedule}) being paged via {page.pager}"
            if page.resolved_at is not None:
                said += ", resolved"
            parts.append(said)
        return "; ".join(parts)

    def as_group(self) -> OnCallGroup:
        return OnCallGroup(frozenset(self.approvers), self.summary())

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "schedule": self.schedule,
            "approvers": list(self.approvers),
            "unlinked": list(self.unlinked),
            "stale": self.stale,
            "summary": self.summary(),
            "levels": [roster.as_json() for roster in self.levels],
            "paged": any(page.triggered_at is not None for page in self.pages),
            "paged_text": self.paged_text(),
            "pages": [
                {
                    "level": page.level,
                    "schedule": page.schedule,
                    "pager": page.pager,
                    "triggered_at": page.triggered_at.isoformat() if page.triggered_at else None,
                    "resolved_at": page.resolved_at.isoformat() if page.resolved_at else None,
                    "error": page.error,
                }
                for page in self.pages
            ],
        }


class OnCallRouting:
    """Schedules plus the store's links and pages: who is in a hold's ``oncall:``
    groups at a moment."""

    def __init__(self, schedules: Schedules, store: Store) -> None:
        self.schedules = schedules
        self._store = store

    async def statuses(self, holds: Sequence[Hold], at: datetime) -> dict[str, list[OnCallStatus]]:
        """Each hold's ``oncall:`` groups (none for a hold that names none)."""
        wanted = {hold.id: oncall_groups(requirement_of(hold)) for hold in holds}
        named = [hold for hold in holds if wanted[hold.id]]
        if not named:
            return {hold.id: [] for hold in holds}
        pages, links, approvers = await asyncio.to_thread(self._read, [h.id for h in named])
        by_hold: dict[str, list[Page]] = {}
        for page in pages:
            by_hold.setdefault(page.hold_id, []).append(page)
        plans = {
            (hold.id, group): self._levels(group, by_hold.get(hold.id, []))
            for hold in named
            for group in wanted[hold.id]
        }
        rosters = await self.schedules.rosters(
            [name for chain in plans.values() for name in chain], at
        )
        out: dict[str, list[OnCallStatus]] = {hold.id: [] for hold in holds}
        for (hold_id, group), chain in plans.items():
            levels = tuple(rosters[name] for name in chain)
            names: list[str] = []
            unlinked: list[str] = []
            for roster in levels:
                found, missing = approvers_on_call(roster, links, approvers)
                names += found
                unlinked += missing
            out[hold_id].append(
                OnCallStatus(
                    group,
                    levels,
                    tuple(dict.fromkeys(names)),
                    tuple(dict.fromkeys(unlinked)),
                    tuple(p for p in by_hold.get(hold_id, []) if p.oncall_group == group),
                )
            )
        return out

    async def on_call_now(self, hold: Hold, at: datetime) -> OnCallNow:
        """Who is in each of the hold's ``oncall:`` groups at ``at``, for a verdict."""
        found = await self.statuses([hold], at)
        return {status.group: status.as_group() for status in found[hold.id]}

    def _levels(self, group: str, pages: Sequence[Page]) -> list[str]:
        """The schedules whose on-call is in ``group`` for a hold with ``pages``."""
        reached = max((p.level for p in pages if p.oncall_group == group), default=1)
        return self.schedules.levels(group.removeprefix(ONCALL_PREFIX), reached)

    def _read(self, hold_ids: Sequence[str]) -> tuple[list[Page], list[ApproverLink], list[str]]:
        return (
            self._store.list_pages(hold_ids),
            self._store.list_approver_links(),
            [approver.name for approver in self._store.list_approvers()],
        )


def status_map(statuses: Mapping[str, list[OnCallStatus]]) -> dict[str, list[dict[str, Any]]]:
    """Each hold's statuses as JSON."""
    return {hold_id: [s.as_json() for s in found] for hold_id, found in statuses.items()}


def schedule_problems(
    bundle: Bundle, schedules: Schedules | None, pages: Callable[[str], bool]
) -> list[str]:
    """What in ``bundle`` names a schedule nobody configured, or pages one with no pager:
    one line each, with the rule (start-up refuses such a bundle; a reload warns)."""
    named: list[tuple[str, Approval]] = [
        (f"rule {rule.id} ({rule.source})", rule.approval)
        for rule in bundle.rules
        if rule.approval is not None
    ]
    if bundle.config.default_approval is not None:
        named.append(("the bundle's defaultApproval", bundle.config.default_approval))
    problems: list[str] = []
    for where, approval in named:
        groups = [*approval.groups, *approval.required_groups]
        for group in dict.fromkeys(g for g in groups if g.startswith(ONCALL_PREFIX)):
            schedule = group.removeprefix(ONCALL_PREFIX)
            if schedules is None or not schedules.known(schedule):
                problems.append(
                    f"{where} names {group}, but no schedule {schedule} is configured; add "
                    f"oncall.schedules.{schedule} or a rotation {schedule} to the rotation file "
                    "(oncall.rotations)"
                )
        if approval.page is not None:
            schedule = approval.page.removeprefix(ONCALL_PREFIX)
            if schedules is not None and schedules.known(schedule) and not pages(schedule):
                problems.append(
                    f"{where} pages {approval.page}, but schedule {schedule} has no pager; add "
                    f"oncall.schedules.{schedule}.pager (pagerduty or opsgenie)"
                )
    return problems

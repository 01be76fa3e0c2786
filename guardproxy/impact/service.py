"""Impact previews and safety steps for the running guard.

:class:`ImpactService` implements both interfaces of
:mod:`guardproxy.approvals.safety`:

* ``held`` (called by the gate on the event loop after a hold is stored) remembers the
  held request and queues its preview on a small thread pool; it returns at once. A
  timer on the loop records "impact unknown: timed out" at the bound if the preview has
  not finished by then (the store keeps the first impact of a hold, so a late result is
  dropped); a full queue is recorded as such. Every outcome is one ``hold.impact``
  record and one ``impact`` event: a failure is "impact unknown: <why>", never nothing.
* ``perform`` (called by the approvals service before a release) runs the step on its
  own pool, bounded by ``step_timeout_seconds``.

Both use the held request as it reached the guard (kept in memory for the holds this
guard made, up to :data:`KEPT_HOLDS`): its server, its parameters, and the credential
the guard would authenticate it with. A hold made before a restart (or by another
replica) can still be previewed no more and its step is unavailable: the approver is
told so and can deny it; the agent's retry makes a new hold.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from guardproxy.action import Action, Provider
from guardproxy.approvals.events import HoldEvents, hold_event
from guardproxy.approvals.safety import StepOutcome
from guardproxy.broker import Broker
from guardproxy.impact.access import Access, HttpClient, resolve_access
from guardproxy.impact.aws import AWS_PREVIEWS, AWS_SNAPSHOTS, AwsTarget
from guardproxy.impact.cloud import CLOUD_PREVIEWS
from guardproxy.impact.git import (
    GITHUB_PREVIEWS,
    GITHUB_SNAPSHOTS,
    backup_ref,
    git_work,
    preview_push,
)
from guardproxy.impact.kube import KUBE_PREVIEWS, KUBE_SNAPSHOTS
from guardproxy.impact.model import Budget, Facts, ImpactError, StepContext
from guardproxy.impact.requests import aws_readings, git_push
from guardproxy.impact.settings import ImpactSettings
from guardproxy.policy.decision import StepOffer
from guardproxy.recognise.request import HttpRequest
from guardproxy.redact import redact_json_text, redact_text
from guardproxy.store.base import Hold, HoldImpact, Store, StoreError

__all__ = ["KEPT_HOLDS", "ImpactService"]

log = structlog.get_logger(__name__)

KEPT_HOLDS = 2000
"""Held requests remembered for their preview and safety steps (oldest dropped first)."""

Clock = Callable[[], datetime]
Gatherer = Callable[[Access, Budget], Facts]
Step = Callable[[Access, Budget, StepContext], dict[str, Any]]


@dataclass
class _Held:
    hold: Hold
    request: HttpRequest
    action: Action
    access: Access | None = None


class ImpactService:
    """Previews holds' impact in the background and performs safety steps on request."""

    def __init__(
        self,
        store: Store,
        *,
        settings: ImpactSettings,
        data_dir: Path,
        broker: Broker | None,
        trust: Callable[[], Path | None],
        events: HoldEvents,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self._store = store
        self._data_dir = data_dir
        self._broker = broker
        self._trust = trust
        self._events = events
        self._clock = clock
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="impact")
        self._steps = ThreadPoolExecutor(2, thread_name_prefix="safety-step")
        self._lock = threading.Lock()
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._queued = 0
        self._saved: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def close(self) -> None:
        """Drop queued previews and wait for those being gathered (each is bounded in
        time); a safety step still running is left to finish on its own thread."""
        for timer in list(self._timers.values()):
            timer.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._steps.shutdown(wait=False, cancel_futures=True)

    # -- previews ------------------------------------------------------------------------

    def held(self, hold: Hold, request: HttpRequest, action: Action) -> None:
        try:
            self._held_now(hold, request, action)
        except Exception:  # never the gate's problem: the hold stands, without a preview
            log.exception("impact.schedule_failed", hold=hold.id)

    def _held_now(self, hold: Hold, request: HttpRequest, action: Action) -> None:
        with self._lock:
            self._held[hold.id] = _Held(hold, request, action)
            while len(self._held) > KEPT_HOLDS:
                self._held.popitem(last=False)
        if not self.settings.enabled:
            return
        loop = asyncio.get_running_loop()
        bound = self.settings.timeout_seconds
        with self._lock:
            full = self._queued >= self.settings.queue
            if not full:
                self._queued += 1
        if full:
            self._in_thread(loop, hold, _unknown("too many previews are being gathered"))
            return
        started = time.monotonic()
        self._timers[hold.id] = loop.call_later(
            bound, self._in_thread, loop, hold, _unknown(f"timed out after {bound:g} s")
        )
        self._pool.submit(self._preview, loop, hold.id, started)

    def _in_thread(self, loop: asyncio.AbstractEventLoop, hold: Hold, facts: _Report) -> None:
        """Save ``facts`` off the loop (the timer and the full queue run on it)."""
        self._timers.pop(hold.id, None)
        loop.run_in_executor(None, self._save, loop, hold, facts)

    def _preview(self, loop: asyncio.AbstractEventLoop, hold_id: str, started: float) -> None:
        with self._lock:
            self._queued -= 1
            held = self._held.get(hold_id)
        if held is None or hold_id in self._saved:
            return
        left = self.settings.timeout_seconds - (time.monotonic() - started)
        if left <= 0:
            return  # the timer said so already
        budget = Budget(left, self.settings.max_calls)
        try:
            report = _Report("known", self._gather(held, budget))
        except ImpactError as error:
            report = _unknown(str(error))
        except Exception as error:  # a gatherer's bug: shown as unknown, logged in full
            log.exception("impact.failed", hold=hold_id)
            report = _unknown(f"the preview failed ({type(error).__name__})")
        timer = self._timers.pop(hold_id, None)
        if timer is not None:
            loop.call_soon_threadsafe(timer.cancel)
        self._save(loop, held.hold, report)

    def _access(self, held: _Held) -> Access:
        if held.access is None:
            held.access = resolve_access(
                held.request,
                held.action,
                held.hold.session_id,
                self._broker,
                held.hold.created_at,
                self._trust,
            )
        return held.access

    def _gather(self, held: _Held, budget: Budget) -> Facts:
        gatherer = self._gatherer(held)
        if gatherer is None:
            raise ImpactError(f"guardproxy has no impact preview for {held.action.summary()}")
        return gatherer(self._access(held), budget)

    def _gatherer(self, held: _Held) -> Gatherer | None:
        action, request = held.action, held.request
        provider, operation = action.provider, action.operation
        if provider is Provider.AWS:
            aws = AWS_PREVIEWS.get((action.service, operation))
            if aws is None:
                return None
            found = aws

            def gather_aws(access: Access, budget: Budget) -> Facts:
                return found(AwsTarget(access, aws_readings(request), action.service), budget)

            return gather_aws
        if provider is Provider.K8S:
            kube = KUBE_PREVIEWS(action)
            if kube is None:
                return None
            k8s = kube
            return lambda access, budget: k8s(HttpClient(access, budget), action)
        if provider is Provider.GIT and operation == "push":

            def gather_git(access: Access, budget: Budget) -> Facts:
                with git_work(self._data_dir) as work:
                    return preview_push(access, request, budget, Path(work))

            return gather_git
        if provider is Provider.GITHUB and operation in GITHUB_PREVIEWS:
            github = GITHUB_PREVIEWS[operation]
            return lambda access, budget: github(HttpClient(access, budget), request, action)
        if provider in (Provider.GCP, Provider.AZURE) and operation in CLOUD_PREVIEWS:
            cloud = CLOUD_PREVIEWS[operation]
            return lambda access, budget: cloud(HttpClient(access, budget), action)
        return None

    def _save(self, loop: asyncio.AbstractEventLoop, hold: Hold, report: _Report) -> None:
        with self._lock:
            if hold.id in self._saved:
                return
            self._saved.add(hold.id)
            if len(self._saved) > KEPT_HOLDS:
                self._saved.clear()  # the store keeps the first anyway; this only saves a write
        summary = redact_text(report.summary)
        impact = HoldImpact(
            hold_id=hold.id,
            status=report.status,
            summary=summary,
            impact_json=redact_json_text(json.dumps(report.impact, default=str)),
            gathered_at=self._clock(),
        )
        try:
            kept = self._store.set_hold_impact(impact)
        except StoreError as error:
            log.error("impact.store_failed", hold=hold.id, error=str(error))
            return
        if not kept:
            return
        log.info("impact", hold=hold.id, status=report.status, summary=summary)
        event = hold_event("impact", hold, impact.gathered_at, reason=_line(report.status, summary))
        loop.call_soon_threadsafe(self._events.publish, event)

    # -- safety steps ---------------------------------------------------------------------

    def unavailable(self, hold: Hold, step: StepOffer) -> str:
        with self._lock:
            held = self._held.get(hold.id)
        if held is None:
            return (
                "this guard no longer has the held request (it restarted since the hold was "
                "made, or another replica made it)"
            )
        if self._step(held, step) is None:
            return f"guardproxy has no {step.name} step for {held.action.summary()}"
        return ""

    def _step(self, held: _Held, step: StepOffer) -> Step | None:
        if step.name != "snapshot":
            return None
        action, request = held.action, held.request
        provider, operation = action.provider, action.operation
        if provider is Provider.AWS:
            aws = AWS_SNAPSHOTS.get((action.service, operation))
            if aws is None:
                return None
            found = aws
            return lambda access, budget, ctx: found(
                AwsTarget(access, aws_readings(request), action.service), budget, ctx
            )
        if provider is Provider.K8S and operation == "delete":
            export = KUBE_SNAPSHOTS.get(action.resource.type)
            if export is None:
                return None
            secrets = step.include_secrets
            return lambda access, budget, ctx: export(
                HttpClient(access, budget), action, ctx, secrets
            )
        if provider is Provider.GIT and operation == "push":
            commands = git_push(request)
            if commands is None or not any(
                not u.creates and u.ref.startswith("refs/heads/") for u in commands.updates
            ):
                return None

            def backup(access: Access, budget: Budget, ctx: StepContext) -> dict[str, Any]:
                with git_work(self._data_dir) as work:
                    return backup_ref(access, request, budget, Path(work), ctx)

            return backup
        if provider is Provider.GITHUB and operation in GITHUB_SNAPSHOTS:
            github = GITHUB_SNAPSHOTS[operation]
            return lambda access, budget, ctx: github(
                HttpClient(access, budget), request, action, ctx
            )
        return None

    async def perform(self, hold: Hold, step: StepOffer) -> StepOutcome:
        started = self._clock()
        loop = asyncio.get_running_loop()
        try:
            result = await asyncio.wait_for(
                loop.run_in_executor(self._steps, self._perform, hold, step, started),
                timeout=self.settings.step_timeout_seconds + 5.0,
            )
        except TimeoutError:
            error = f"timed out after {self.settings.step_timeout_seconds:g} s"
            return StepOutcome(step.name, False, started, self._clock(), error=error)
        except ImpactError as failure:
            return StepOutcome(step.name, False, started, self._clock(), error=str(failure))
        except Exception as failure:
            log.exception("impact.step_failed", hold=hold.id, step=step.name)
            error = f"the step failed ({type(failure).__name__})"
            return StepOutcome(step.name, False, started, self._clock(), error=error)
        return StepOutcome(step.name, True, started, self._clock(), result=result)

    def _perform(self, hold: Hold, step: StepOffer, started: datetime) -> dict[str, Any]:
        with self._lock:
            held = self._held.get(hold.id)
        if held is None:
            raise ImpactError("this guard no longer has the held request")
        run = self._step(held, step)
        if run is None:
            raise ImpactError(f"guardproxy has no {step.name} step for {held.action.summary()}")
        budget = Budget(self.settings.step_timeout_seconds, self.settings.step_max_calls)
        return run(self._access(held), budget, StepContext(hold.id, started, self._data_dir))


@dataclass(frozen=True)
class _Report:
    status: str
    facts: Facts

    @property
    def summary(self) -> str:
        return self.facts.summary

    @property
    def impact(self) -> dict[str, Any]:
        return self.facts.impact


def _unknown(why: str) -> _Report:
    return _Report("unknown", Facts(why, {"error": why}))


def _line(status: str, summary: str) -> str:
    return summary if status == "known" else f"impact unknown: {summary}"

"""The decision steps of one request, the same for the proxy, for replay and for tests.

Before the gate: recognise → resolve learned names → the session as actor (and the
``host-mismatch`` risk tag) → does the bundle read history for any reading → context →
evaluate (:meth:`Pipeline.decide`). After the gate has applied the decision (forward,
deny, hold): its outcome goes into the session history, and the response of a forwarded
request may teach names (:meth:`Pipeline.after`, :func:`learns_from`).

Nothing here knows mitmproxy or an event loop. The Guard addon (intercept/addons.py)
adapts flows to it and schedules it on the proxy's loop (:mod:`guardproxy.pipeline.live`);
replay feeds it the exchanges of a capture (:mod:`guardproxy.pipeline.replay`). So a replay
of captured traffic computes the very action, context and input hash the proxy decided on.

How it fails: ``recognise`` never raises (an unclassifiable request is ``verb=unknown``),
``SessionHistory.context``/``record`` never raise (``signals.history_unavailable``); any
other exception propagates to the caller, which on the proxy's request path refuses the
request (intercept/failsafe.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from guardproxy.action import Action, Verb
from guardproxy.context import Context, SessionInfo
from guardproxy.policy import Bundle, Decision, evaluate
from guardproxy.recognise import recognise
from guardproxy.recognise.request import HttpRequest, RecogniseSettings
from guardproxy.session.history import FORWARDED, SessionHistory
from guardproxy.session.names import ResponseLearner, learner_for, resolve
from guardproxy.store.base import SessionEvent


class Policies(Protocol):
    """Where the pipeline takes its bundle: the gate (the bundle in force and a shadow
    bundle) on the proxy, one fixed bundle in replay and tests."""

    @property
    def bundle(self) -> Bundle: ...

    def reads_history(self, verb: Verb, bundle: Bundle | None = None) -> bool:
        """Whether a rule of ``bundle`` (or of a shadow bundle) can read history for ``verb``."""
        ...


@dataclass(frozen=True, slots=True)
class FixedPolicies:
    """One bundle and no shadow: the :class:`Policies` of replay and tests."""

    bundle: Bundle

    def reads_history(self, verb: Verb, bundle: Bundle | None = None) -> bool:
        return (bundle or self.bundle).reads_history(verb)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the pipeline decided for one request: the engine's whole input and its result.

    ``action`` is the action as evaluated and recorded (names resolved, the session as
    actor, ``host-mismatch`` tagged, on every reading), ``context`` the context it was
    evaluated in; the decision's ``input_hash`` is the hash of the two.
    """

    action: Action
    context: Context
    decision: Decision

    @property
    def session(self) -> SessionInfo:
        return self.context.session


def with_actor(action: Action, session: SessionInfo, request: HttpRequest) -> Action:
    """``action`` (one reading) done by ``session``; anything but a read, sent to one host
    while its Host header names another, gets the ``host-mismatch`` risk tag."""
    updates: dict[str, object] = {
        "actor": action.actor.model_copy(update={"session_id": session.id})
    }
    claimed = (
        request.host_header.rsplit(":", 1)[0].strip("[]").lower() if request.host_header else ""
    )
    if claimed and claimed != request.host.strip("[]").lower() and action.verb is not Verb.READ:
        updates["risk_tags"] = [*action.risk_tags, "host-mismatch"]
    return action.model_copy(update=updates)


def learns_from(status: int) -> bool:
    """Whether a response with ``status`` is learned from: only a success names what exists
    (an error body may echo ids back)."""
    return 200 <= status < 300


class Pipeline:
    """The decision steps over one session history and recogniser settings.

    Thread-safe as its parts are: decisions run in worker threads on the proxy.
    """

    def __init__(
        self, policies: Policies, settings: RecogniseSettings, history: SessionHistory
    ) -> None:
        self._policies = policies
        self._settings = settings
        self._history = history

    @property
    def history(self) -> SessionHistory:
        return self._history

    def decide(self, request: HttpRequest, session: SessionInfo, now: datetime) -> Verdict:
        """Recognise ``request`` and decide it for ``session`` at ``now``.

        The context carries the session's history only when a rule of the bundle (or
        of the shadow bundle) can read it for one of the action's readings; otherwise
        the decision cannot depend on it and it is not computed.
        """
        names = self._history.names
        action = recognise(request, self._settings).each_reading(
            lambda reading: with_actor(resolve(reading, names), session, request)
        )
        bundle = self._policies.bundle  # one bundle for the whole decision, even across a reload
        if any(self._policies.reads_history(r.verb, bundle) for r in action.all_readings()):
            context = self._history.context(action, session, now)
        else:
            context = Context(now=now, session=session)
        return Verdict(action, context, evaluate(bundle, action, context))

    def record(self, action: Action, session_id: str, outcome: str, at: datetime) -> None:
        """What the gate did with ``action`` (``allow`` when forwarded, else ``deny`` or
        ``hold``) into the session history; the proxy does it for a change before the
        request goes out, so the session's next decision sees it."""
        self._history.record(action, session_id, outcome, at)

    def record_with(
        self,
        action: Action,
        session_id: str,
        outcome: str,
        at: datetime,
        write: Callable[[Sequence[SessionEvent]], None],
    ) -> None:
        """:meth:`record`, the events stored by ``write`` (the proxy's decision record
        transaction) and counted once it returned; raises what ``write`` raises, with
        nothing counted (:meth:`SessionHistory.record_with`)."""
        self._history.record_with(action, session_id, outcome, at, write)

    def learner(self, action: Action, outcome: str) -> ResponseLearner | None:
        """What learns names from the response, if the request was forwarded and its
        operation names ids that are tracked (session/names.py)."""
        if outcome != FORWARDED:
            return None
        return learner_for(action, self._history.names)

    def after(self, verdict: Verdict, outcome: str, at: datetime) -> ResponseLearner | None:
        """:meth:`record` the outcome, then the response's :meth:`learner`."""
        self.record(verdict.action, verdict.session.id, outcome, at)
        return self.learner(verdict.action, outcome)


__all__ = ["FixedPolicies", "Pipeline", "Policies", "Verdict", "learns_from", "with_actor"]

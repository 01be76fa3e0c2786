"""The storage interface: records, errors and the ``Store`` protocol.

The proxy keeps sessions, holds, approval events and the decision log here.  The
protocol is deliberately small and synchronous so that SQLite (single host, the
default) and PostgreSQL (fleet mode, later) can implement it the same way; the proxy
calls it from a worker thread (``asyncio.to_thread``), so implementations must be
thread-safe.

Rules every implementation follows:

* Timestamps are timezone-aware datetimes passed in by the caller.  The store never
  reads the clock, so decisions and hold lifecycles stay replayable and testable.
* Action, context and decision payloads are JSON text produced by the caller
  (``model.model_dump_json()``); the store keeps them verbatim and does not depend on
  the pydantic models, so their evolution needs no store migration.
* Every failure raises :class:`StoreError` (or a subclass), never a driver exception,
  so callers can fail closed with a single ``except StoreError``.
* The audit chains (:mod:`guardproxy.store.chain`): every decision, upstream status and
  hold event is appended in the same transaction as the change it records, to the
  chain of the store that appends it (one chain per opened store: per process, per
  replica), linked with ``chain.link`` after that chain's head (``seq``, ``hash``).  A
  store appends to its chain one transaction at a time and no other store does, so
  writers of different chains never wait for each other; ``UNIQUE (chain, seq)``
  refuses a second record of one sequence number, so a chain never forks even if two
  writers were given the same.  Checkpoints bind every chain's head into one signed
  hash.
  Payloads are stored as the exact text given (TEXT, not a re-serialised JSON type):
  the hashes cover that text.
* Session events and sessions pass through :func:`redacted_event` and
  :func:`redacted_session` before they are persisted.
"""

from __future__ import annotations

import hashlib
import secrets
from base64 import b32encode
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from guardproxy.redact import REDACTED, redact_text

# -- errors -------------------------------------------------------------------------


class StoreError(Exception):
    """Any store failure; callers that cannot proceed without the store fail closed."""


class InvalidValueError(StoreError, ValueError):
    """The caller passed something the store will not keep (a naive datetime, a bad grant)."""


class NotFoundError(StoreError, LookupError):
    """The record an update refers to does not exist."""


class AlreadyExistsError(StoreError):
    """A record with that id (or session token hash) is already stored."""


class SchemaVersionError(StoreError):
    """The database was written by a newer guardproxy than this one."""


class HoldConflict(StoreError):  # noqa: N818 - the name the design and its callers use
    """A hold transition was asked from a state that does not allow it.

    ``hold`` is the hold as it is now (its ``state`` says why), so a second approver
    can be told "already approved by alice" rather than just "failed".
    """

    def __init__(self, hold: Hold, wanted: str) -> None:
        super().__init__(
            f"hold {hold.id} is {hold.state.value}, cannot {wanted} it"
            + (f" (resolved by {hold.resolved_by})" if hold.resolved_by else "")
        )
        self.hold = hold
        self.state = hold.state


# -- records ------------------------------------------------------------------------


class HoldState(StrEnum):
    """A hold's lifecycle: pending, then exactly one of the other states.

    ``released`` is an approved ``once`` grant whose request has been let through;
    session grants stay ``approved`` and lapse at ``grant_expires_at``.
    """

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    RELEASED = "released"


class Verdict(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


GRANT_ONCE = "once"
_SESSION_GRANT_PREFIX = "session:"


def grant_seconds(grant: str) -> int | None:
    """Parse a grant: ``once`` -> None, ``session:<seconds>`` -> seconds (> 0).

    Raises :class:`InvalidValueError` for anything else, so a typo can never widen a grant.
    """
    if grant == GRANT_ONCE:
        return None
    if grant.startswith(_SESSION_GRANT_PREFIX):
        value = grant.removeprefix(_SESSION_GRANT_PREFIX)
        if value.isascii() and value.isdigit() and int(value) > 0:
            return int(value)
    raise InvalidValueError(f"grant must be 'once' or 'session:<seconds>', got {grant!r}")


def hash_token(token: str) -> str:
    """The sha256 hex digest stored for a session credential (the token never is)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_hold_id() -> str:
    """A short id people can type: ``h-`` and 10 lower-case base32 characters (50 bits)."""
    return "h-" + b32encode(secrets.token_bytes(7)).decode()[:10].lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """One agent session started through guardproxy (or an anonymous client)."""

    id: str
    name: str
    user: str
    agent: str
    command: tuple[str, ...]
    cwd: str
    labels: tuple[str, ...]
    started_at: datetime
    ended_at: datetime | None = None
    anonymous: bool = False
    token_hash: str | None = None
    """sha256 of the per-session proxy credential (:func:`hash_token`); None if anonymous."""

    @property
    def active(self) -> bool:
        return self.ended_at is None


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """A request waiting for (or having had) a human decision."""

    id: str
    created_at: datetime
    expires_at: datetime
    session_id: str
    request_digest: str
    action_json: str
    decision_json: str
    summary: str
    state: HoldState
    grant: str
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    reason: str | None = None
    grant_expires_at: datetime | None = None
    released_at: datetime | None = None
    detail_json: str = "{}"
    """What the approver sees and the release re-evaluates: the redacted request, the
    context at decision time (session, history, signals); JSON, ``{}`` if unknown."""

    @property
    def grant_seconds(self) -> int | None:
        return grant_seconds(self.grant)


def carry_seconds(hold: Hold) -> int:
    """How long after its approval a hold's grant also releases the same request made by
    another session of the same user from the same working directory (a one-shot
    ``guardproxy run`` started again): a session grant for its length, a ``once`` grant
    for as long as the hold could wait for approval (its time-out)."""
    seconds = hold.grant_seconds
    if seconds is not None:
        return seconds
    return max(1, round((hold.expires_at - hold.created_at).total_seconds()))


def carried_until(hold: Hold) -> datetime | None:
    """Until when an approved hold's grant serves another session (see :func:`carry_seconds`);
    None unless it is approved and still unused."""
    if hold.state is not HoldState.APPROVED or hold.resolved_at is None:
        return None
    return hold.resolved_at + timedelta(seconds=carry_seconds(hold))


def carries_approvals(session: Session | None) -> bool:
    """Whether approvals can follow this session's user and working directory to a later
    session: a registered session that recorded both (never an anonymous client, nor a
    directory whose name redaction changed: two different ones could read the same)."""
    return (
        session is not None
        and not session.anonymous
        and bool(session.user and session.cwd)
        and REDACTED not in session.cwd
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """One person's verdict on a hold; quorums count distinct approvers over these."""

    id: int
    hold_id: str
    approver: str
    groups: tuple[str, ...]
    verdict: Verdict
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Approver:
    """A person who may approve or deny holds, by the groups they belong to."""

    name: str
    groups: tuple[str, ...]
    token_hash: str
    """sha256 of their control API token (:func:`hash_token`); the token is never stored."""
    created_at: datetime


LINK_KINDS = ("slack", "pagerduty", "opsgenie")
"""The outside identities an approver can be linked to: who clicks in Slack, who is on
call in PagerDuty or Opsgenie."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApproverLink:
    """An approver's identity elsewhere: their Slack user id, PagerDuty user id or email,
    Opsgenie username. One per kind and approver; an identity names one approver."""

    approver: str
    kind: str
    """One of :data:`LINK_KINDS`."""
    external_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    """One page sent (or to be sent) for a hold: level 1 of an ``oncall:`` group its
    policy pages when it is held, the next level when it escalates. Claimed in the store
    before it is sent, so a page goes out once whichever replica sends it, and resolved
    once when the hold is decided."""

    hold_id: str
    oncall_group: str
    """The policy's ``page``: ``oncall:<schedule>`` (level 1 is that schedule)."""
    level: int
    schedule: str
    """The on-call schedule paged at this level (its pager says how)."""
    pager: str
    """``pagerduty``, ``opsgenie``, or ``none`` when the schedule has no pager."""
    dedup_key: str
    """PagerDuty's dedup key, Opsgenie's alias: the same on trigger and resolve."""
    claimed_at: datetime
    triggered_at: datetime | None
    """When the pager accepted it (None: not yet, or it failed: see ``error``)."""
    resolved_at: datetime | None
    """When its resolution was claimed (the hold was decided or expired)."""
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatMessage:
    """The chat message that shows a hold (Slack: its channel and ``ts``), to update it."""

    hold_id: str
    kind: str
    channel: str
    message_ts: str
    posted_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldImpact:
    """What the guard found out about a held action's target before anyone decided:
    read-only facts (``known``), or why it could not (``unknown``: a failure or a
    time-out, never shown as "nothing"). Informational: no decision reads it."""

    hold_id: str
    status: str
    """``known`` or ``unknown``."""
    summary: str
    """One line for people: ``3 resources (1 AWS::RDS::DBInstance, ...); exports ...``."""
    impact_json: str
    """The structured facts (redacted JSON)."""
    gathered_at: datetime


STEP_STATES = ("chosen", "succeeded", "failed")


@dataclass(frozen=True, slots=True, kw_only=True)
class SafetyStepRecord:
    """One safety step of a hold: chosen by an approver, then performed before release
    (succeeded, with its result) or not (failed, with the error; nothing was released)."""

    id: int
    hold_id: str
    step: str
    state: str
    """One of :data:`STEP_STATES`."""
    actor: str
    """Who chose it (``chosen``), or who approved the release it ran for."""
    result_json: str
    """What it produced (redacted JSON): a snapshot id, a file, a ref; ``{}`` if nothing."""
    error: str
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionRecord:
    """One line of the decision log: everything needed to replay and audit a decision.

    ``outcome`` is what happened to the request (``allow``, ``deny``, ``hold``, or a
    caller-defined value such as ``error``), which may differ from the decision's own
    outcome when a hold was released or the proxy failed closed.
    """

    id: str
    at: datetime
    session_id: str
    action_json: str
    context_json: str
    decision_json: str
    outcome: str
    hold_id: str | None = None
    upstream_status: int | None = None
    provider: str = ""
    """The action's provider, kept as a column of the audit chain for filtering."""
    shadow_json: str | None = None
    """What a shadow bundle or audit-mode rules would have done (recorded, not enforced)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """What a caller appends to the audit chain; the store links it (seq, hashes).

    ``kind`` is ``decision``, ``upstream`` (the upstream's status for a forwarded
    decision, ``subject`` = decision id) or a hold event (``hold.created``,
    ``hold.approval``, ``hold.approved``, ``hold.denied``, ``hold.expired``,
    ``hold.released``, ``hold.impact``, ``hold.step``; ``subject`` = hold id).
    ``payload_json`` is kept verbatim and must already be redacted.
    """

    record_id: str
    kind: str
    at: datetime
    session_id: str
    subject: str
    outcome: str
    provider: str
    payload_json: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord(AuditEntry):
    """A stored chain record: ``hash`` covers every field and ``prev_hash``.

    ``seq`` numbers the records of one chain from 1; the first one's ``prev_hash`` is
    the chain's genesis (:func:`guardproxy.store.chain.chain_genesis`), which is how the
    hashes of a chain's records depend on which chain they are in.  ``position`` is the
    order records were appended in across all chains (not hashed; 0 in a record not read
    back from the store).
    """

    seq: int
    prev_hash: str
    hash: str
    chain: int = 0
    position: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditChain:
    """One writer's chain: who opened it (informational, not hashed) and its head."""

    id: int
    writer: str
    head_seq: int
    """0 while it has no record."""
    head_hash: str


@dataclass(frozen=True, slots=True)
class ChainHead:
    """A chain's record ``seq`` with hash ``hash``, as a checkpoint binds it."""

    chain: int
    seq: int
    hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A signed statement of the audit chains' heads at ``at``.

    ``heads`` are the chains whose head moved since the previous checkpoint, which
    ``prev_hash`` names: each checkpoint binds its own heads and, through the previous
    ones, every chain's latest head.  ``hash`` covers every field but the signature
    (:func:`guardproxy.store.chain.checkpoint_hash`); ``signature`` is made with a key
    kept outside the database, identified by ``key_id``.
    """

    seq: int
    at: datetime
    heads: tuple[ChainHead, ...]
    key_id: str
    prev_hash: str
    hash: str
    signature: str


Signer = Callable[[str], str]
"""Signs a checkpoint's hash (hex) and returns the signature (text)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEvent:
    """One action of a session as the history tracker needs it after a restart.

    ``recreate`` and ``destroyed_container`` are what the tracker derived when the
    action happened, kept so that reloading a session does not re-derive them from
    a resource history that has moved on since.
    """

    session_id: str
    at: datetime
    summary: str
    operation: str
    verb: str
    provider: str
    environment: str
    resource_key: str
    outcome: str
    protection_removed: bool = False
    recreate: bool = False
    destroyed_container: str = ""


def redacted_event(event: SessionEvent) -> SessionEvent:
    """The event as it may be persisted: credential shapes removed from its free text.

    Resource names come from request paths, where agents sometimes put tokens; every
    backend stores session events through this.
    """
    summary = redact_text(event.summary)
    key = redact_text(event.resource_key)
    container = redact_text(event.destroyed_container)
    if (summary, key, container) == (event.summary, event.resource_key, event.destroyed_container):
        return event
    return replace(event, summary=summary, resource_key=key, destroyed_container=container)


def redacted_session(session: Session) -> Session:
    """The session as it may be persisted: no credential in its command line or cwd."""
    command = tuple(redact_text(part) for part in session.command)
    cwd = redact_text(session.cwd)
    if command == session.command and cwd == session.cwd:
        return session
    return replace(session, command=command, cwd=cwd)


@dataclass(frozen=True, slots=True)
class EventTotal:
    """How many events of a session share a verb, provider, environment and outcome."""

    verb: str
    provider: str
    environment: str
    outcome: str
    count: int


HoldWatcher = Callable[[str, HoldState], None]
"""Called with a hold's id and new state when any process changes it (see ``watch_holds``)."""


# -- the interface ------------------------------------------------------------------


class Store(Protocol):
    """What the proxy, the CLI and the approval channels need from storage.

    All methods are synchronous and thread-safe; all raise :class:`StoreError`.
    Lists are newest first.
    """

    def close(self) -> None: ...

    def watch_holds(self, callback: HoldWatcher) -> None:
        """Call ``callback`` whenever another process changes a hold's state.

        A store shared by several proxies (PostgreSQL) calls it from a background
        thread within moments of the change, so an approval given through one replica
        releases a request waiting on another.  A single-host store may never call it:
        its one proxy resolves holds itself.  Notifications can be lost (a dropped
        connection), so callers re-read holds now and then as well.
        """
        ...

    # sessions

    def create_session(self, session: Session) -> None:
        """Store a new session; :class:`AlreadyExistsError` if the id or token hash is taken."""
        ...

    def get_session(self, session_id: str) -> Session | None: ...

    def find_session_by_token(self, token_hash: str) -> Session | None:
        """The session holding that credential hash, ended or not (the caller checks)."""
        ...

    def end_session(self, session_id: str, at: datetime) -> Session:
        """Mark a session ended; idempotent (the first end time is kept)."""
        ...

    def list_sessions(self, *, active_only: bool = False, limit: int = 100) -> list[Session]: ...

    def resume_session(self, session_id: str, token_hash: str) -> Session:
        """Re-open an ended, registered session with a new credential (its holds, grants
        and history stay its own).  :class:`NotFoundError` if there is no such session,
        :class:`InvalidValueError` if it is still active or anonymous."""
        ...

    # holds

    def create_hold(
        self,
        *,
        session_id: str,
        request_digest: str,
        action_json: str,
        decision_json: str,
        summary: str,
        grant: str,
        created_at: datetime,
        expires_at: datetime,
        detail_json: str = "{}",
    ) -> Hold:
        """Store a new pending hold with a fresh id."""
        ...

    def get_hold(self, hold_id: str) -> Hold | None: ...

    def find_hold(self, session_id: str, request_digest: str, now: datetime) -> Hold | None:
        """The newest hold a retry of this exact request should join, if any.

        That is a pending hold not yet past ``expires_at``, an approved hold whose
        grant is still usable (unconsumed ``once``, or a session grant before
        ``grant_expires_at``), or a denied hold (retries get the same denial).
        """
        ...

    def list_holds(
        self,
        *,
        state: HoldState | None = None,
        session_id: str | None = None,
        limit: int = 100,
    ) -> list[Hold]: ...

    def resolve_hold(
        self, hold_id: str, *, state: HoldState, by: str, reason: str, now: datetime
    ) -> Hold:
        """Approve or deny a pending hold, atomically.

        :class:`HoldConflict` (carrying the current hold) if it is no longer pending; a
        pending hold already past ``expires_at`` is marked expired first.
        :class:`NotFoundError` if there is no such hold.
        """
        ...

    def expire_holds(self, now: datetime) -> list[Hold]:
        """Mark pending holds with ``expires_at <= now`` expired; return them."""
        ...

    def consume_approval(self, session_id: str, request_digest: str, now: datetime) -> Hold | None:
        """The approval that lets this exact request through now, or None.

        A ``once`` grant is released exactly once (it becomes ``released``, and only one
        caller among concurrent ones gets it); a session grant is returned, unconsumed,
        while ``now < grant_expires_at``.
        """
        ...

    def consume_carried_approval(
        self, session_id: str, request_digest: str, now: datetime
    ) -> Hold | None:
        """An approval of this exact request given to *another* session of the same user
        and working directory (:func:`carries_approvals` for both), usable until
        :func:`carried_until`; consumed as :meth:`consume_approval` does (a ``once`` grant
        exactly once, whichever session uses it).  None if ``session_id`` is not a stored
        session that carries approvals."""
        ...

    def find_carried_hold(self, session_id: str, request_digest: str, now: datetime) -> Hold | None:
        """The newest pending hold (not past ``expires_at``) of this exact request made by
        another session of the same user and working directory: a new session's retry
        joins it instead of opening a second hold."""
        ...

    # approval events

    def record_approval(
        self,
        hold_id: str,
        *,
        approver: str,
        groups: tuple[str, ...],
        verdict: Verdict,
        reason: str,
        at: datetime,
    ) -> Approval:
        """Record one verdict on a pending hold (:class:`HoldConflict` otherwise)."""
        ...

    def list_approvals(self, hold_id: str) -> list[Approval]:
        """A hold's verdicts, oldest first (the order they were given)."""
        ...

    # approvers

    def add_approver(self, approver: Approver) -> None:
        """Store a new approver; :class:`AlreadyExistsError` if the name or token is taken."""
        ...

    def get_approver(self, name: str) -> Approver | None: ...

    def find_approver_by_token(self, token_hash: str) -> Approver | None: ...

    def list_approvers(self) -> list[Approver]:
        """All approvers, by name."""
        ...

    def remove_approver(self, name: str) -> None:
        """Delete an approver (their past verdicts stay); :class:`NotFoundError` if unknown."""
        ...

    # identities elsewhere (Slack, PagerDuty, Opsgenie)

    def link_approver(self, link: ApproverLink) -> None:
        """Set the approver's identity of ``link.kind`` (replacing theirs of that kind);
        :class:`NotFoundError` if there is no such approver, :class:`AlreadyExistsError`
        if the identity is another approver's."""
        ...

    def unlink_approver(self, name: str, kind: str) -> None:
        """Forget the approver's identity of ``kind``; :class:`NotFoundError` if none."""
        ...

    def list_approver_links(self, kind: str | None = None) -> list[ApproverLink]:
        """Every link (of ``kind``), by approver."""
        ...

    def find_approver_by_link(self, kind: str, external_id: str) -> Approver | None:
        """The approver whose identity of ``kind`` is ``external_id`` (exactly)."""
        ...

    # pages and chat messages

    def claim_page(
        self,
        hold_id: str,
        oncall_group: str,
        level: int,
        *,
        schedule: str,
        pager: str,
        dedup_key: str,
        at: datetime,
    ) -> Page | None:
        """Record that level ``level`` of the hold's ``oncall_group`` is being paged; None
        if it was already (by this or another process): only the claimer sends it."""
        ...

    def update_page(
        self,
        hold_id: str,
        oncall_group: str,
        level: int,
        *,
        triggered_at: datetime | None,
        error: str,
    ) -> None:
        """Record the trigger's outcome: when the pager accepted it, or why not."""
        ...

    def claim_page_resolutions(self, hold_id: str, at: datetime) -> list[Page]:
        """Mark the hold's unresolved pages resolved at ``at`` and return them:
        only the claimer sends the resolutions, so each goes out once."""
        ...

    def list_pages(self, hold_ids: Sequence[str]) -> list[Page]:
        """The pages of these holds, by hold, group and level."""
        ...

    def save_chat_message(self, message: ChatMessage) -> bool:
        """Remember the message showing a hold; False if one of that kind was saved."""
        ...

    def get_chat_message(self, hold_id: str, kind: str) -> ChatMessage | None: ...

    def claim_chat_request(self, key: str, at: datetime, *, forget_before: datetime) -> bool:
        """Record a chat callback by ``key`` (a digest of the signed request); False if
        it was seen before: a replay. Keys seen before ``forget_before`` are dropped
        (requests that old are refused on their timestamp)."""
        ...

    # impact previews and safety steps (informational; the audit chain records them)

    def set_hold_impact(self, impact: HoldImpact) -> bool:
        """Keep a hold's impact (once: False if it already has one) and chain a
        ``hold.impact`` record; the caller redacts ``impact_json`` and ``summary``."""
        ...

    def hold_impacts(self, hold_ids: Sequence[str]) -> dict[str, HoldImpact]:
        """The impacts kept for these holds, by hold id."""
        ...

    def record_safety_step(
        self,
        *,
        hold_id: str,
        step: str,
        state: str,
        actor: str,
        result_json: str = "{}",
        error: str = "",
        started_at: datetime,
        finished_at: datetime,
    ) -> SafetyStepRecord:
        """Append a safety step record and chain a ``hold.step`` record (NotFoundError if
        there is no such hold, InvalidValueError for an unknown state); the caller
        redacts ``result_json`` and ``error``."""
        ...

    def list_safety_steps(self, hold_ids: Sequence[str]) -> list[SafetyStepRecord]:
        """The safety step records of these holds, oldest first."""
        ...

    # decision log

    def append_decision(self, record: DecisionRecord, events: Sequence[SessionEvent] = ()) -> None:
        """Store the decision and append its chain record, in one transaction, with
        ``events`` (the session history the request adds, :meth:`append_session_events`).

        Durable when this returns: the gate forwards a mutating request only after it.
        Nothing is written if any of it fails.
        """
        ...

    def append_decisions(self, records: Sequence[DecisionRecord]) -> None:
        """Append several records in one transaction (one disk sync for a batch)."""
        ...

    def set_upstream_statuses(self, statuses: Sequence[tuple[str, int]]) -> None:
        """(decision id, HTTP status) pairs; ids not (yet) stored are ignored.

        Each known id also gets an ``upstream`` chain record (the decision's own record
        is never changed).
        """
        ...

    def get_decision(self, decision_id: str) -> DecisionRecord | None: ...

    def set_upstream_status(self, decision_id: str, status: int) -> None: ...

    def list_decisions(
        self,
        *,
        session_id: str | None = None,
        outcome: str | None = None,
        provider: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[DecisionRecord]:
        """Newest first; ``provider`` is the action's, ``since`` inclusive."""
        ...

    # audit chain (hold methods above append their own hold.* events, in their transaction)

    def append_audit(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        """Link and append entries after this store's chain head, atomically; return them."""
        ...

    def audit_records(self, *, after: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """Records of every chain with ``position > after``, in the order they were
        appended (verify and export page on ``position``).

        Of two records of one chain the earlier is always first, but a record can become
        visible after later positions of *other* chains (transactions commit in another
        order than they append): a reader paging while writers append can find a chain
        continuing past a record it has not seen, and reads that record with
        :meth:`chain_records`.
        """
        ...

    def chain_records(
        self, chain: int, *, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditRecord]:
        """Records of one chain with ``seq > after_seq``, in chain order."""
        ...

    def audit_chains(self) -> list[AuditChain]:
        """Every chain, by id, with its head as stored (verify checks it)."""
        ...

    def checkpoint_audit(
        self, *, at: datetime, key_id: str, sign: Signer, min_interval: timedelta = timedelta(0)
    ) -> Checkpoint | None:
        """Bind the head of every chain that moved since the last checkpoint into the next
        checkpoint, signed with ``sign`` (made in the same transaction, so checkpoints from
        several replicas form one sequence).  None, and nothing stored, if no chain moved or
        the last checkpoint is less than ``min_interval`` older than ``at``."""
        ...

    def audit_checkpoints(self, *, after_seq: int = 0, limit: int = 1000) -> list[Checkpoint]:
        """Checkpoints with ``seq > after_seq``, oldest first, with their heads."""
        ...

    def get_audit_record(self, record_id: str) -> AuditRecord | None: ...

    def audit_for(self, subject: str) -> list[AuditRecord]:
        """Every record about a decision or hold id, oldest first."""
        ...

    def list_audit(
        self,
        *,
        kind: str | None = None,
        session_id: str | None = None,
        outcome: str | None = None,
        provider: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Records matching every given filter (``since`` <= at < ``until``), newest first."""
        ...

    # session history

    def append_session_events(self, events: Sequence[SessionEvent]) -> None: ...

    def session_events(
        self, session_id: str, *, since: datetime | None = None, limit: int = 100
    ) -> list[SessionEvent]:
        """The session's events at or after ``since`` (all if None), newest first."""
        ...

    def session_event_totals(self, session_id: str) -> list[EventTotal]:
        """The session's whole-session counts, grouped."""
        ...

    def resource_events(
        self, resource_key: str, *, outcome: str | None = None, limit: int = 100
    ) -> list[SessionEvent]:
        """Events about a resource key in any session, newest first."""
        ...

    def changed_resource_keys(self, *, outcome: str, limit: int) -> list[str]:
        """Distinct resource keys with a non-read event of ``outcome``, at most ``limit``."""
        ...

"""The storage interface: the ``Store`` protocol, with its records (:mod:`.records`) and
errors (:mod:`.errors`) re-exported from here.

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

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from guardproxy.store.errors import (
    AlreadyExistsError,
    InvalidValueError,
    NotFoundError,
    SchemaVersionError,
    StoreError,
)
from guardproxy.store.records import (
    GRANT_ONCE,
    LINK_KINDS,
    STEP_STATES,
    Approval,
    Approver,
    ApproverLink,
    AuditChain,
    AuditEntry,
    AuditRecord,
    ChainHead,
    ChatMessage,
    Checkpoint,
    DecisionRecord,
    EventTotal,
    Hold,
    HoldConflict,
    HoldImpact,
    HoldState,
    HoldWatcher,
    Page,
    SafetyStepRecord,
    Session,
    SessionEvent,
    Signer,
    Verdict,
    carried_until,
    carries_approvals,
    carry_seconds,
    grant_seconds,
    hash_token,
    new_hold_id,
    redacted_event,
    redacted_session,
)

__all__ = [
    "GRANT_ONCE",
    "LINK_KINDS",
    "STEP_STATES",
    "AlreadyExistsError",
    "Approval",
    "Approver",
    "ApproverLink",
    "AuditChain",
    "AuditEntry",
    "AuditRecord",
    "ChainHead",
    "ChatMessage",
    "Checkpoint",
    "DecisionRecord",
    "EventTotal",
    "Hold",
    "HoldConflict",
    "HoldImpact",
    "HoldState",
    "HoldWatcher",
    "InvalidValueError",
    "NotFoundError",
    "Page",
    "SafetyStepRecord",
    "SchemaVersionError",
    "Session",
    "SessionEvent",
    "Signer",
    "Store",
    "StoreError",
    "Verdict",
    "carried_until",
    "carries_approvals",
    "carry_seconds",
    "grant_seconds",
    "hash_token",
    "new_hold_id",
    "redacted_event",
    "redacted_session",
]

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

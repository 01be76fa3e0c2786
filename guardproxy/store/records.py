"""The records a :class:`~guardproxy.store.base.Store` keeps and returns, and the helpers
that make and redact them (see :mod:`guardproxy.store.base` for the rules)."""

from __future__ import annotations

import hashlib
import secrets
from base64 import b32encode
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from guardproxy.redact import REDACTED, redact_text
from guardproxy.store.errors import InvalidValueError, StoreError

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

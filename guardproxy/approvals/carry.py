"""What an approval lets through, in words for the agent, the approver and ``holds``.

A grant releases exactly the approved request (its digest) for the session that made
it.  A one-shot ``guardproxy run`` usually ends before anyone approves, so the grant
also serves a later session of the same user started from the same working directory,
for a bounded time (:func:`~guardproxy.store.base.carry_seconds`), and the session
itself when resumed (``guardproxy run --resume``).  These texts say exactly which
request passes, where, how often and until when, with the names filled in.
"""

from __future__ import annotations

from guardproxy.store.base import (
    Hold,
    HoldState,
    Session,
    carried_until,
    carries_approvals,
    carry_seconds,
)


def span(seconds: int) -> str:
    """``45 s``, ``30 min``, ``1 h``, ``1 h 30 min``, ``2 d``."""
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    return f"{hours // 24} d"


def _again(session: Session) -> str:
    return f"{session.user} runs it again from {session.cwd}"


def agent_note(hold: Hold, session: Session | None) -> str:
    """For the held request's answer: what happens once the hold is approved."""
    window = span(carry_seconds(hold))
    carries = carries_approvals(session)
    if hold.grant_seconds is None:
        text = "it passes once, in this session"
        if carries:
            assert session is not None
            text += (
                f", or, if this session has ended by then, when {_again(session)} "
                f"within {window} of the approval"
            )
        return text
    text = f"identical calls pass for {window} after the approval, in this session"
    if carries:
        assert session is not None
        text += f" or when {_again(session)}"
    return text


def release_note(hold: Hold, session: Session | None) -> str:
    """For the approver and ``holds``: what approving a pending hold lets through, or
    what an approved one still lets through; empty once nothing more can pass."""
    if hold.state is HoldState.PENDING:
        window = f"within {span(carry_seconds(hold))} of the approval"
        lead = "once approved, "
    elif hold.state is HoldState.APPROVED:
        until = carried_until(hold)
        assert until is not None
        window = f"until {until.strftime('%Y-%m-%d %H:%M:%S')} UTC"
        lead = ""
    else:
        return ""
    once = hold.grant_seconds is None
    what = "the same request passes once" if once else "identical requests pass"
    sid = hold.session_id
    places: list[str] = []
    ended = session is not None and not session.active
    if carries_approvals(session):
        assert session is not None
        places.append(f"when {_again(session)} {window}")
    if session is not None and not session.anonymous and ended:
        places.append(f"in `guardproxy run --resume {sid}`")
    if not ended:
        own = f"in session {sid}" if once else f"in session {sid} {window}"
        if hold.state is HoldState.PENDING and once:
            own += " (a request still waiting there is released at once)"
        places.insert(0, own)
    prefix = f"session {sid} has ended; " if ended else ""
    if not places:
        return f"{prefix}nothing can use the approval: the session cannot be resumed"
    return f"{prefix}{lead}{what} " + ", or ".join(places)

"""Two-way Slack: each hold posted with Approve and Deny buttons, a reason dialog, the
verdict given through the same approvals service as the CLI and console, and the message
kept up to date (progress, who is on call, the outcome).

The parts, as Slack's public documentation describes them:

* :class:`SlackApi`: Web API methods called with a bot token (``Authorization: Bearer
  xoxb-…``, JSON bodies; Slack answers HTTP 200 with ``{"ok": false, "error": …}`` for
  refusals and 429 with ``Retry-After`` when rate limiting): ``chat.postMessage``
  (answers the message's ``channel`` and ``ts``), ``chat.update`` (by channel and ts)
  and ``views.open`` (a modal, with the ``trigger_id`` of the click, valid 3 seconds).
* :class:`SlackChat`: subscribes to hold events; ``held`` posts the message, later events
  update it. The message's channel and ts are kept in the store, so the replica that
  decides a hold updates the message another one posted.
* :class:`SlackInteractions`: what Slack POSTs to the app's interactivity request URL
  (``application/x-www-form-urlencoded``, ``payload=<JSON>``). Each request is checked
  before anything else: ``X-Slack-Signature`` must be ``v0=`` and the hex HMAC-SHA256 of
  ``v0:<X-Slack-Request-Timestamp>:<raw body>`` under the app's signing secret (compared
  in constant time), the timestamp within five minutes of the clock, and the request not
  seen before (its signature is claimed in the store: a replay within the window is
  refused, on any replica). A ``block_actions`` click on Approve or Deny opens the reason
  dialog; its ``view_submission`` gives the verdict as the approver linked to the Slack
  user (``guardproxy approvers link NAME --slack U…``); a refusal (not linked, not
  eligible, the session's own user approving, no reason) is shown in the dialog.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import structlog

from guardproxy.approvals.channels import SLACK_HEADLINES, console_link, slack_escape
from guardproxy.approvals.events import HoldEvent
from guardproxy.approvals.notify import backoff_delay
from guardproxy.approvals.oncall import OnCallStatus
from guardproxy.approvals.paging import hold_impact
from guardproxy.approvals.rules import ApprovalRefused, progress, requirement_of
from guardproxy.approvals.service import ApprovalService
from guardproxy.approvals.webapi import ApiRequest, ApiTransport, TransportError, api_url
from guardproxy.approvals.worker import HoldEventWorker
from guardproxy.store.base import Approval, ChatMessage, Hold, HoldState, Store, StoreError

__all__ = [
    "APPROVE_ACTION",
    "DENY_ACTION",
    "REASON_BLOCK",
    "SLACK_WINDOW_SECONDS",
    "VERDICT_CALLBACK",
    "ChatReply",
    "SlackApi",
    "SlackChat",
    "SlackError",
    "SlackInteractions",
    "hold_message",
    "slack_signature",
    "verify_slack_request",
]

log = structlog.get_logger(__name__)

SLACK_WINDOW_SECONDS = 300
"""Requests whose timestamp is further than this from the clock are refused (Slack's
documentation: five minutes)."""
APPROVE_ACTION = "guardproxy_approve"
DENY_ACTION = "guardproxy_deny"
VERDICT_CALLBACK = "guardproxy_verdict"
REASON_BLOCK = "reason"
SECTION_LIMIT = 2900
ERROR_LIMIT = 300
KIND = "slack"


# ------------------------------------------------------------------ signing


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v0=<hex HMAC-SHA256(secret, "v0:<timestamp>:<body>")>``."""
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify_slack_request(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    now: float,
    window: float = SLACK_WINDOW_SECONDS,
) -> str:
    """ "" if Slack signed ``body`` at ``timestamp`` within ``window`` of ``now``, else
    what is wrong (for the log; the caller answers 401 whatever it is)."""
    if not timestamp or not signature:
        return "unsigned: no X-Slack-Request-Timestamp or X-Slack-Signature"
    try:
        sent = int(timestamp)
    except ValueError:
        return "the timestamp is not a number"
    if abs(now - sent) > window:
        return f"the timestamp is {int(now - sent)} s from the clock (at most {int(window)})"
    try:
        expected = slack_signature(secret, timestamp, body)
    except UnicodeEncodeError:
        return "the timestamp is not a number"
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return "the signature does not match"
    return ""


# ---------------------------------------------------------------------- API


class SlackError(Exception):
    """A Web API call failed; ``error`` is Slack's error code (or the transport's)."""

    def __init__(self, method: str, error: str) -> None:
        super().__init__(f"Slack {method}: {error}")
        self.error = error


class SlackApi:
    def __init__(
        self,
        *,
        api: str,
        token: str,
        transport: ApiTransport,
        timeout: float = 5.0,
        max_attempts: int = 5,
        backoff_seconds: float = 1.0,
    ) -> None:
        self._api = api
        self._token = token
        self._transport = transport
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds

    async def call(self, method: str, body: Mapping[str, Any], *, retry: bool = True) -> Any:
        """The answer of ``method``; :class:`SlackError` if Slack said no. Rate limits and
        server trouble are retried (``retry``), refusals are not."""
        request = ApiRequest(
            "POST",
            api_url(self._api, f"/{method}"),
            {
                "Content-Type": "application/json; charset=utf-8",
                "Authorization": f"Bearer {self._token}",
            },
            json.dumps(body).encode(),
            timeout=self._timeout,
        )
        attempts = self._max_attempts if retry else 1
        error = ""
        for attempt in range(1, attempts + 1):
            try:
                answer = await self._transport.send(request)
            except TransportError as failure:
                error = str(failure)
            else:
                if answer.status == 429:
                    error = "ratelimited"
                    wait = _seconds(answer.headers.get("retry-after"))
                    if attempt < attempts:
                        await asyncio.sleep(min(wait, 30.0))
                        continue
                elif answer.status >= 500:
                    error = f"HTTP {answer.status}"
                elif answer.status != 200:
                    raise SlackError(method, f"HTTP {answer.status}")
                else:
                    try:
                        data = answer.json()
                    except ValueError:
                        raise SlackError(method, "an answer that is not JSON") from None
                    if isinstance(data, dict) and data.get("ok") is True:
                        return data
                    code = str(data.get("error") if isinstance(data, dict) else "not ok")
                    if code != "ratelimited":
                        raise SlackError(method, code)
                    error = code
            if attempt < attempts:
                await asyncio.sleep(backoff_delay(attempt, self._backoff, 30.0))
        raise SlackError(method, error)


def _seconds(text: str | None) -> float:
    try:
        return max(float(text or "1"), 0.0)
    except ValueError:
        return 1.0


# ------------------------------------------------------------------ messages


def _clip(text: str, limit: int = SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _clip(text)}


def _plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": _clip(text, limit), "emoji": True}


@dataclass(frozen=True, slots=True)
class HoldView:
    hold: Hold
    approvals: list[Approval]
    on_call: list[OnCallStatus]
    console_url: str


_OUTCOME = {
    HoldState.APPROVED: "approved",
    HoldState.DENIED: "denied",
    HoldState.EXPIRED: "expired",
}


def hold_message(view: HoldView) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and the blocks that show a hold: while it is pending, with
    Approve and Deny; once decided, with the outcome and no buttons."""
    hold = view.hold
    counted = progress(requirement_of(hold), view.approvals)
    summary = slack_escape(hold.summary)
    pending = hold.state is HoldState.PENDING
    released = hold.state is HoldState.RELEASED
    headline = SLACK_HEADLINES[
        "held" if pending else "approved" if released else _OUTCOME[hold.state]
    ]
    by = f" by {slack_escape(hold.resolved_by)}" if hold.resolved_by and not pending else ""
    by += ", released to the upstream" if released else ""
    lines = [f"*{headline}{by}*: `{summary}`", f"*Impact:* {slack_escape(hold_impact(hold))}"]
    lines.append(f"*Approvals:* {slack_escape(counted.text())}")
    for status in view.on_call:
        lines.append(
            f"*On call ({slack_escape(status.schedule)}):* {slack_escape(status.summary())}; "
            f"{slack_escape(status.paged_text())}"
        )
    for approval in view.approvals:
        said = "approved" if approval.verdict.value == "approve" else "denied"
        lines.append(f"• {slack_escape(approval.approver)} {said}: {slack_escape(approval.reason)}")
    if not pending and hold.reason:
        lines.append(f"*Outcome:* {slack_escape(hold.state.value)}: {slack_escape(hold.reason)}")
    details = [f"hold {hold.id}", f"session {slack_escape(hold.session_id)}"]
    details.append(
        f"expires {hold.expires_at.isoformat(timespec='seconds')}"
        if pending
        else f"{hold.state.value} {hold.resolved_at.isoformat(timespec='seconds')}"
        if hold.resolved_at
        else hold.state.value
    )
    link = console_link(view.console_url, hold.id)
    buttons: list[dict[str, Any]] = []
    if pending:
        buttons += [
            {"type": "button", "action_id": APPROVE_ACTION, "value": hold.id,
             "text": _plain("Approve"), "style": "primary"},
            {"type": "button", "action_id": DENY_ACTION, "value": hold.id,
             "text": _plain("Deny"), "style": "danger"},
        ]  # fmt: skip
    buttons.append(
        {
            "type": "button",
            "action_id": "guardproxy_console",
            "text": _plain("Open in console"),
            "url": link,
        }
    )
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": _text("\n".join(lines))},
        {"type": "context", "elements": [_text(" · ".join(details))]},
        {"type": "actions", "block_id": "guardproxy_actions", "elements": buttons},
    ]
    text = f"{headline}{by}: {summary} ({counted.text()})"
    return _clip(text, 3000), blocks


class SlackChat(HoldEventWorker):
    """Posts each hold to the channel and keeps its message up to date."""

    kinds = frozenset({"held", "approval", "approved", "denied", "expired", "escalated",
                       "released"})  # fmt: skip
    name = "slack"

    def __init__(
        self,
        api: SlackApi,
        channel: str,
        store: Store,
        approvals: ApprovalService,
        *,
        console_url: Callable[[], str],
    ) -> None:
        super().__init__()
        self._api = api
        self._channel = channel
        self._store = store
        self._approvals = approvals
        self._console_url = console_url

    async def work(self, event: HoldEvent) -> None:
        try:
            view = await self.view(event.hold_id)
        except StoreError as error:
            log.error("slack.store_failed", hold=event.hold_id, error=str(error))
            return
        if view is None:
            return
        text, blocks = hold_message(view)
        saved = await asyncio.to_thread(self._store.get_chat_message, event.hold_id, KIND)
        try:
            if saved is None:
                await self._post(event.hold_id, text, blocks)
            else:
                await self._api.call(
                    "chat.update",
                    {"channel": saved.channel, "ts": saved.message_ts, "text": text,
                     "blocks": blocks},
                )  # fmt: skip
                log.info("slack.updated", hold=event.hold_id, kind=event.kind)
        except SlackError as error:
            log.error("slack.failed", hold=event.hold_id, kind=event.kind, error=str(error))

    async def _post(self, hold_id: str, text: str, blocks: list[dict[str, Any]]) -> None:
        answer = await self._api.call(
            "chat.postMessage",
            {"channel": self._channel, "text": text, "blocks": blocks, "unfurl_links": False,
             "unfurl_media": False},
        )  # fmt: skip
        message = ChatMessage(
            hold_id=hold_id,
            kind=KIND,
            channel=str(answer.get("channel") or self._channel),
            message_ts=str(answer.get("ts") or ""),
            posted_at=self._approvals.now(),
        )
        await asyncio.to_thread(self._store.save_chat_message, message)
        log.info("slack.posted", hold=hold_id, channel=message.channel)

    async def view(self, hold_id: str) -> HoldView | None:
        """What the message shows, read now."""
        found = await asyncio.to_thread(self._read, hold_id)
        if found is None:
            return None
        hold, approvals = found
        statuses = await self._approvals.on_call_statuses([hold])
        return HoldView(hold, approvals, statuses.get(hold.id, []), self._console_url())

    def _read(self, hold_id: str) -> tuple[Hold, list[Approval]] | None:
        hold = self._store.get_hold(hold_id)
        if hold is None:
            return None
        return hold, self._store.list_approvals(hold_id)


# -------------------------------------------------------------- interactions


@dataclass(frozen=True, slots=True)
class ChatReply:
    """The answer to a chat callback: its status and JSON body (None: empty)."""

    status: int
    body: dict[str, Any] | None = None


def _notice(title: str, text: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "title": _plain(title, 24),
        "close": _plain("Close", 24),
        "blocks": [{"type": "section", "text": _text(text)}],
    }


def _errors(text: str) -> ChatReply:
    return ChatReply(
        200, {"response_action": "errors", "errors": {REASON_BLOCK: _clip(text, ERROR_LIMIT)}}
    )


class SlackInteractions:
    """Answers Slack's interactivity requests (see the module docstring)."""

    def __init__(
        self,
        *,
        signing_secret: str,
        store: Store,
        approvals: ApprovalService,
        api: SlackApi,
        clock: Callable[[], datetime],
        window: float = SLACK_WINDOW_SECONDS,
    ) -> None:
        self._secret = signing_secret
        self._store = store
        self._approvals = approvals
        self._api = api
        self._clock = clock
        self._window = window

    async def handle(self, headers: Mapping[str, str], body: bytes) -> ChatReply:
        """``headers`` with lower-case names; never raises."""
        now = self._clock()
        signature = headers.get("x-slack-signature")
        problem = verify_slack_request(
            self._secret, headers.get("x-slack-request-timestamp"), signature, body,
            now=now.timestamp(), window=self._window,
        )  # fmt: skip
        if problem:
            log.warning("chat.refused", reason=problem)
            return ChatReply(401, {"error": "invalid request signature"})
        assert signature is not None
        key = hashlib.sha256(signature.encode()).hexdigest()
        forget = now - timedelta(seconds=2 * self._window)
        try:
            fresh = await asyncio.to_thread(
                lambda: self._store.claim_chat_request(key, now, forget_before=forget)
            )
        except StoreError as error:
            log.error("chat.store_failed", error=str(error))
            return ChatReply(503, {"error": "the store failed"})
        if not fresh:
            log.warning("chat.replayed")
            return ChatReply(409, {"error": "this request was handled already"})
        payload = _payload(headers, body)
        if payload is None:
            return ChatReply(400, {"error": "expected a form with a JSON payload"})
        try:
            if payload.get("type") == "block_actions":
                return await self._clicked(payload)
            if payload.get("type") == "view_submission":
                return await self._submitted(payload)
        except StoreError as error:
            log.error("chat.store_failed", error=str(error))
            return ChatReply(503, {"error": "the store failed"})
        return ChatReply(200)  # other interactions are not ours

    async def _approver_of(self, payload: Mapping[str, Any]) -> tuple[str, Any]:
        user = payload.get("user")
        user_id = str(user.get("id") or "") if isinstance(user, dict) else ""
        if not user_id:
            return "", None
        found = await asyncio.to_thread(self._store.find_approver_by_link, KIND, user_id)
        return user_id, found

    async def _clicked(self, payload: Mapping[str, Any]) -> ChatReply:
        actions = payload.get("actions")
        action = actions[0] if isinstance(actions, list) and actions else None
        if not isinstance(action, dict) or action.get("action_id") not in (
            APPROVE_ACTION,
            DENY_ACTION,
        ):
            return ChatReply(200)
        approve = action["action_id"] == APPROVE_ACTION
        hold_id = str(action.get("value") or "")
        trigger = str(payload.get("trigger_id") or "")
        user_id, approver = await self._approver_of(payload)
        if approver is None:
            log.warning("chat.unlinked_user", user=user_id, hold=hold_id)
            await self._open(trigger, _notice("Not linked", _unlinked(user_id)))
            return ChatReply(200)
        hold = await asyncio.to_thread(self._store.get_hold, hold_id)
        if hold is None or hold.state is not HoldState.PENDING:
            said = (
                f"There is no hold {slack_escape(hold_id)}."
                if hold is None
                else f"Hold {hold.id} is {hold.state.value}"
                + (f" by {slack_escape(hold.resolved_by)}" if hold.resolved_by else "")
                + "; it can no longer be decided."
            )
            await self._open(trigger, _notice("Already decided", said))
            return ChatReply(200)
        approvals = await asyncio.to_thread(self._store.list_approvals, hold.id)
        await self._open(trigger, _dialog(hold, approvals, approve))
        return ChatReply(200)

    async def _open(self, trigger: str, view: dict[str, Any]) -> None:
        try:
            await self._api.call("views.open", {"trigger_id": trigger, "view": view}, retry=False)
        except SlackError as error:
            log.error("chat.dialog_failed", error=str(error))

    async def _submitted(self, payload: Mapping[str, Any]) -> ChatReply:
        view = payload.get("view")
        if not isinstance(view, dict) or view.get("callback_id") != VERDICT_CALLBACK:
            return ChatReply(200)
        try:
            meta = json.loads(str(view.get("private_metadata") or ""))
            hold_id, approve = str(meta["hold"]), bool(meta["approve"])
        except (ValueError, KeyError, TypeError):
            return _errors("this dialog is not guardproxy's; open it again from the message")
        user_id, approver = await self._approver_of(payload)
        if approver is None:
            log.warning("chat.unlinked_user", user=user_id, hold=hold_id)
            return _errors(_unlinked(user_id))
        reason = _reason(view)
        try:
            outcome = await self._approvals.decide_hold(
                hold_id, approver, approve=approve, reason=reason
            )
        except ApprovalRefused as refused:
            log.info("chat.refused_verdict", approver=approver.name, hold=hold_id,
                     error=refused.error)  # fmt: skip
            return _errors(refused.error)
        log.info("chat.verdict", approver=approver.name, hold=hold_id, approve=approve,
                 state=outcome.hold.state.value)  # fmt: skip
        return ChatReply(200)  # closes the dialog; the message is updated by the events


def _dialog(hold: Hold, approvals: list[Approval], approve: bool) -> dict[str, Any]:
    """The reason dialog for a verdict on ``hold``."""
    verb = "Approve" if approve else "Deny"
    counted = progress(requirement_of(hold), approvals)
    text = (
        f"*{slack_escape(hold.summary)}*\n{slack_escape(hold_impact(hold))}\n"
        f"_{slack_escape(counted.text())}_"
    )
    return {
        "type": "modal",
        "callback_id": VERDICT_CALLBACK,
        "private_metadata": json.dumps({"hold": hold.id, "approve": approve}),
        "title": _plain(f"{verb} hold", 24),
        "submit": _plain(verb, 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            {"type": "section", "text": _text(text)},
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": _plain("Why? (kept in the audit trail)", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_BLOCK,
                    "multiline": True,
                    "max_length": 1000,
                },
            },
        ],
    }


def _payload(headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
    if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        (text,) = form["payload"]
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError, KeyError):
        return None
    return payload if isinstance(payload, dict) else None


def _reason(view: Mapping[str, Any]) -> str:
    try:
        value = view["state"]["values"][REASON_BLOCK][REASON_BLOCK]["value"]
    except (KeyError, TypeError):
        return ""
    return str(value or "")


def _unlinked(user_id: str) -> str:
    return (
        f"Your Slack account ({slack_escape(user_id)}) is not linked to a guardproxy approver, "
        "so it cannot decide holds. An admin links it on the guardproxy host: "
        f"`guardproxy approvers link NAME --slack {slack_escape(user_id)}`"
    )

"""Fakes of PagerDuty, Opsgenie and Slack on 127.0.0.1, written to their public API
documentation, for the real on-call, paging and chat code to talk to over real HTTP.

* PagerDuty REST API, List all of the on-calls: ``GET /oncalls`` (``Authorization: Token
  token=…``, ``Accept: application/vnd.pagerduty+json;version=2``; ``schedule_ids[]``,
  ``escalation_policy_ids[]``, ``since``, ``until``, ``include[]=users``, ``limit``,
  ``offset``; answer ``{"oncalls": [...], "limit", "offset", "more", "total"}``, each
  on-call with ``user``, ``schedule``, ``escalation_policy``, ``escalation_level``,
  ``start``, ``end``; users are references unless ``include[]=users``).
* PagerDuty Events API v2: ``POST /v2/enqueue`` (``routing_key``, ``event_action``
  trigger / acknowledge / resolve, ``dedup_key``; a trigger needs ``payload.summary``,
  ``payload.source``, ``payload.severity``); answers 202 ``{"status": "success",
  "message": "Event processed", "dedup_key"}``, 400 ``{"status": "invalid event", ...}``.
* Opsgenie: ``GET /v2/schedules/{identifier}/on-calls`` (``scheduleIdentifierType``,
  ``flat``, ``date``; ``Authorization: GenieKey …``; flat answers
  ``{"data": {"_parent": {...}, "onCallRecipients": [...]}, "took", "requestId"}``),
  ``POST /v2/alerts`` (``message`` required, at most 130 characters; ``alias``,
  ``responders``...) and ``POST /v2/alerts/{identifier}/close?identifierType=alias``,
  both answered 202 ``{"result": "Request will be processed", "took", "requestId"}``.
* Slack Web API: ``chat.postMessage``, ``chat.update`` and ``views.open`` (JSON bodies,
  ``Authorization: Bearer xoxb-…``, always HTTP 200 with ``{"ok": true|false, ...}``);
  and Slack's side of interactivity: payloads POSTed to the app's request URL as
  ``application/x-www-form-urlencoded`` ``payload=<json>``, signed with
  ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature: v0=<hex HMAC-SHA256(signing
  secret, "v0:<timestamp>:<body>")>``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import httpx


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[Seen], Answer]


class FakeServer:
    """A threaded HTTP server on 127.0.0.1 answering by ``(method, path prefix)``."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.down = False
        """Answer every request with 503 (a service that is having a bad day)."""
        self._routes: list[tuple[str, str, Route]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                parts = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    parts.path,
                    parse_qs(parts.query, keep_blank_values=True),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                answer = fake._answer(seen)
                payload = b"" if answer.body is None else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def route(self, method: str, prefix: str, handler: Route) -> None:
        self._routes.append((method, prefix, handler))

    def _answer(self, seen: Seen) -> Answer:
        with self._lock:
            self.seen.append(seen)
            if self.down:
                return Answer(503, {"message": "service unavailable"})
            for method, prefix, handler in self._routes:
                if seen.method == method and seen.path.startswith(prefix):
                    try:
                        return handler(seen)
                    except Exception as error:  # a fake's bug shows as a 500 with its text
                        return Answer(500, {"message": f"fake failed: {error!r}"})
            return Answer(404, {"message": f"no route {seen.method} {seen.path}"})

    def requests(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path.startswith(path)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _instant(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


# ---------------------------------------------------------------- PagerDuty


@dataclass
class PdUser:
    id: str
    name: str
    email: str

    def reference(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "user_reference",
            "summary": self.name,
            "self": f"https://api.pagerduty.com/users/{self.id}",
            "html_url": f"https://example.pagerduty.com/users/{self.id}",
        }

    def full(self) -> dict[str, Any]:
        return {**self.reference(), "type": "user", "name": self.name, "email": self.email}


@dataclass
class PdOnCall:
    user: PdUser
    start: str | None
    end: str | None
    schedule: str | None = None
    escalation_policy: str = "PEP0001"
    escalation_level: int = 1


class FakePagerDuty(FakeServer):
    """PagerDuty's REST API (on-calls) and Events API v2 on one address."""

    def __init__(self, token: str = "pd-rest-token") -> None:
        super().__init__()
        self.token = token
        self.oncalls: list[PdOnCall] = []
        self.events: list[dict[str, Any]] = []
        self.incidents: dict[str, str] = {}
        """dedup key -> triggered | resolved"""
        self.route("GET", "/oncalls", self._oncalls)
        self.route("POST", "/v2/enqueue", self._enqueue)

    def _oncalls(self, seen: Seen) -> Answer:
        if seen.headers.get("authorization") != f"Token token={self.token}":
            return Answer(401, {"error": {"message": "Unauthorized", "code": 2006}})
        if "application/vnd.pagerduty+json;version=2" not in seen.headers.get("accept", ""):
            return Answer(406, {"error": {"message": "Not Acceptable"}})
        query = seen.query
        schedules = set(query.get("schedule_ids[]", []))
        policies = set(query.get("escalation_policy_ids[]", []))
        since = _instant(query.get("since", [None])[0])
        until = _instant(query.get("until", [None])[0])
        include_users = "users" in query.get("include[]", [])
        limit = int(query.get("limit", ["25"])[0])
        offset = int(query.get("offset", ["0"])[0])
        if since is None or until is None or until < since:
            return Answer(400, {"error": {"message": "Invalid Input Provided", "code": 2001}})
        matching = []
        for entry in self.oncalls:
            if schedules and entry.schedule not in schedules:
                continue
            if policies and entry.escalation_policy not in policies:
                continue
            start, end = _instant(entry.start), _instant(entry.end)
            if (start is not None and start > until) or (end is not None and end <= since):
                continue  # does not overlap [since, until]
            matching.append(entry)
        page = matching[offset : offset + limit]
        return Answer(
            200,
            {
                "oncalls": [
                    {
                        "escalation_policy": {
                            "id": e.escalation_policy,
                            "type": "escalation_policy_reference",
                            "summary": "Platform",
                        },
                        "escalation_level": e.escalation_level,
                        "schedule": None
                        if e.schedule is None
                        else {"id": e.schedule, "type": "schedule_reference", "summary": "S"},
                        "user": e.user.full() if include_users else e.user.reference(),
                        "start": e.start,
                        "end": e.end,
                    }
                    for e in page
                ],
                "limit": limit,
                "offset": offset,
                "more": offset + limit < len(matching),
                "total": None,
            },
        )

    def _enqueue(self, seen: Seen) -> Answer:
        try:
            event = seen.json()
        except ValueError:
            return Answer(400, {"status": "invalid event", "message": "Event object is invalid"})
        errors = []
        if not isinstance(event.get("routing_key"), str) or len(event["routing_key"]) != 32:
            errors.append("'routing_key' must be a 32 character integration key")
        action = event.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid")
        if action == "trigger":
            payload = event.get("payload") or {}
            if not payload.get("summary") or len(payload["summary"]) > 1024:
                errors.append("'payload.summary' is missing or too long")
            if not payload.get("source"):
                errors.append("'payload.source' is missing")
            if payload.get("severity") not in ("critical", "error", "warning", "info"):
                errors.append("'payload.severity' is invalid")
        elif not event.get("dedup_key"):
            errors.append("'dedup_key' is required for acknowledge and resolve")
        if errors:
            return Answer(
                400,
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
            )
        key = event.get("dedup_key") or uuid.uuid4().hex
        self.events.append(event)
        if action == "trigger":
            self.incidents.setdefault(key, "triggered")  # a repeated trigger is deduplicated
        elif action == "resolve" and key in self.incidents:
            self.incidents[key] = "resolved"
        return Answer(202, {"status": "success", "message": "Event processed", "dedup_key": key})

    def actions(self, key: str) -> list[str]:
        return [e["event_action"] for e in self.events if e.get("dedup_key") == key]


# ---------------------------------------------------------------- Opsgenie


class FakeOpsgenie(FakeServer):
    def __init__(self, key: str = "og-api-key") -> None:
        super().__init__()
        self.key = key
        self.schedules: dict[str, list[str]] = {}
        """schedule name -> on-call usernames"""
        self.alerts: dict[str, dict[str, Any]] = {}
        """alias -> the create request, with "status": open | closed"""
        self.route("GET", "/v2/schedules/", self._on_calls)
        self.route("POST", "/v2/alerts", self._alerts)

    def _authorised(self, seen: Seen) -> Answer | None:
        if seen.headers.get("authorization") != f"GenieKey {self.key}":
            return Answer(401, {"message": "Could not authenticate", "took": 0.0,
                                "requestId": str(uuid.uuid4())})  # fmt: skip
        return None

    def _on_calls(self, seen: Seen) -> Answer:
        refused = self._authorised(seen)
        if refused is not None:
            return refused
        parts = seen.path.split("/")  # ['', 'v2', 'schedules', '{id}', 'on-calls']
        if len(parts) != 5 or parts[4] != "on-calls":
            return Answer(404, {"message": "not found"})
        identifier = parts[3]
        if seen.query.get("scheduleIdentifierType", ["id"])[0] != "name":
            return Answer(404, {"message": f"Schedule with id [{identifier}] does not exist"})
        if identifier not in self.schedules:
            return Answer(
                404, {"message": f"Schedule with name [{identifier}] does not exist",
                      "took": 0.01, "requestId": str(uuid.uuid4())},
            )  # fmt: skip
        flat = seen.query.get("flat", ["false"])[0] == "true"
        people = self.schedules[identifier]
        data: dict[str, Any] = {
            "_parent": {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, identifier)),
                        "name": identifier, "enabled": True},
        }  # fmt: skip
        if flat:
            data["onCallRecipients"] = list(people)
        else:
            data["onCallParticipants"] = [
                {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, p)), "name": p, "type": "user"}
                for p in people
            ]
        return Answer(200, {"data": data, "took": 0.02, "requestId": str(uuid.uuid4())})

    def _alerts(self, seen: Seen) -> Answer:
        refused = self._authorised(seen)
        if refused is not None:
            return refused
        accepted = {"result": "Request will be processed", "took": 0.1,
                    "requestId": str(uuid.uuid4())}  # fmt: skip
        body = seen.json()
        if seen.path == "/v2/alerts":
            message = body.get("message")
            if not isinstance(message, str) or not message or len(message) > 130:
                problem = {"message": "Message can not be empty or longer than 130"}
                return Answer(
                    422, {"message": "Request body is not processable", "errors": problem}
                )
            alias = body.get("alias") or str(uuid.uuid4())
            if alias in self.alerts and self.alerts[alias]["status"] == "open":
                self.alerts[alias]["count"] += 1  # deduplicated by alias
            else:
                self.alerts[alias] = {**body, "status": "open", "count": 1}
            return Answer(202, accepted)
        if seen.path.endswith("/close"):
            if seen.query.get("identifierType", ["id"])[0] != "alias":
                return Answer(422, {"message": "identifierType must be alias here"})
            alias = unquote(seen.path.removeprefix("/v2/alerts/").removesuffix("/close"))
            if alias in self.alerts:
                self.alerts[alias]["status"] = "closed"
            return Answer(202, accepted)
        return Answer(404, {"message": "not found"})


# ------------------------------------------------------------------- Slack


class FakeSlack(FakeServer):
    """The Slack Web API methods the app calls, under ``/api/``."""

    def __init__(self, token: str = "xoxb-test-token") -> None:
        super().__init__()
        self.token = token
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        """(channel, ts) -> the message as last posted or updated"""
        self.views: list[dict[str, Any]] = []
        self.triggers: set[str] = set()
        """trigger ids Slack handed out (with interactions) and not used yet"""
        self._ts = itertools.count(1)
        self.route("POST", "/api/chat.postMessage", self._post)
        self.route("POST", "/api/chat.update", self._update)
        self.route("POST", "/api/views.open", self._views_open)

    def _call(self, seen: Seen) -> dict[str, Any] | Answer:
        if seen.headers.get("authorization") != f"Bearer {self.token}":
            return Answer(200, {"ok": False, "error": "invalid_auth"})
        if not seen.headers.get("content-type", "").startswith("application/json"):
            return Answer(200, {"ok": False, "error": "invalid_arguments"})
        body: dict[str, Any] = seen.json()
        problem = _blocks_problem(body.get("blocks", []))
        if problem:
            return Answer(200, {"ok": False, "error": "invalid_blocks", "errors": [problem]})
        return body

    def _post(self, seen: Seen) -> Answer:
        body = self._call(seen)
        if isinstance(body, Answer):
            return body
        channel = body.get("channel")
        if not isinstance(channel, str) or not channel.startswith("C"):
            return Answer(200, {"ok": False, "error": "channel_not_found"})
        if not body.get("text") and not body.get("blocks"):
            return Answer(200, {"ok": False, "error": "no_text"})
        ts = f"{1700000000 + next(self._ts)}.000100"
        self.messages[(channel, ts)] = body
        return Answer(200, {"ok": True, "channel": channel, "ts": ts, "message": body})

    def _update(self, seen: Seen) -> Answer:
        body = self._call(seen)
        if isinstance(body, Answer):
            return body
        key = (body.get("channel", ""), body.get("ts", ""))
        if key not in self.messages:
            return Answer(200, {"ok": False, "error": "message_not_found"})
        self.messages[key] = body
        return Answer(200, {"ok": True, "channel": key[0], "ts": key[1], "text": body.get("text")})

    def _views_open(self, seen: Seen) -> Answer:
        body = self._call(seen)
        if isinstance(body, Answer):
            return body
        trigger = body.get("trigger_id")
        if trigger not in self.triggers:
            return Answer(200, {"ok": False, "error": "expired_trigger_id"})
        self.triggers.discard(trigger)  # a trigger id opens one view
        view = body.get("view") or {}
        problem = _view_problem(view)
        if problem:
            return Answer(200, {"ok": False, "error": "invalid_arguments", "errors": [problem]})
        self.views.append(view)
        return Answer(200, {"ok": True, "view": {**view, "id": f"V{len(self.views):08d}"}})

    def message(self, channel: str) -> dict[str, Any]:
        """The one message in ``channel``."""
        (found,) = [m for (c, _), m in self.messages.items() if c == channel]
        return found

    def new_trigger(self) -> str:
        trigger = f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex[:16]}"
        self.triggers.add(trigger)
        return trigger


def _text_problem(text: Any, limit: int, where: str) -> str:
    if not isinstance(text, dict) or text.get("type") not in ("plain_text", "mrkdwn"):
        return f"{where}: a text object is needed"
    if not isinstance(text.get("text"), str) or not 1 <= len(text["text"]) <= limit:
        return f"{where}: text must be 1 to {limit} characters"
    return ""


def _blocks_problem(blocks: Any) -> str:
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "blocks must be a list of at most 50"
    for number, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        where = f"blocks[{number}]"
        if kind == "section":
            if problem := _text_problem(block.get("text"), 3000, where):
                return problem
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                return f"{where}: a context has 1 to 10 elements"
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                return f"{where}: actions have 1 to 25 elements"
            ids = [e.get("action_id") for e in elements if e.get("action_id")]
            if len(ids) != len(set(ids)):
                return f"{where}: action_id must be unique within the block"
            for element in elements:
                if element.get("type") != "button":
                    return f"{where}: only buttons here"
                if problem := _text_problem(element.get("text"), 75, where):
                    return problem
                if len(str(element.get("value", ""))) > 2000:
                    return f"{where}: a button value is at most 2000 characters"
        elif kind == "input":
            if problem := _text_problem(block.get("label"), 2000, where):
                return problem
            if not isinstance(block.get("element"), dict):
                return f"{where}: an input needs an element"
        elif kind not in ("divider", "header"):
            return f"{where}: unknown block type {kind!r}"
    return ""


def _view_problem(view: dict[str, Any]) -> str:
    if view.get("type") != "modal":
        return "view.type must be modal"
    for key in ("title", "submit", "close"):
        if key in view and (problem := _text_problem(view[key], 24, f"view.{key}")):
            return problem
    if "title" not in view:
        return "view.title is required"
    has_input = any(b.get("type") == "input" for b in view.get("blocks", []))
    if has_input and "submit" not in view:
        return "a view with inputs needs submit"
    if len(view.get("private_metadata", "")) > 3000:
        return "private_metadata is at most 3000 characters"
    return _blocks_problem(view.get("blocks"))


# ---------------------------------------------- Slack calling the app's request URL


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def interaction_body(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": slack_signature(secret, stamp, body),
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
    }


def block_action(
    user: str, action_id: str, value: str, *, trigger: str, channel: str, ts: str
) -> dict[str, Any]:
    """A ``block_actions`` payload: a button in a message was clicked."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T0TEAM"},
        "api_app_id": "A0APP",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": ts, "channel_id": channel,
                      "is_ephemeral": False},
        "trigger_id": trigger,
        "team": {"id": "T0TEAM", "domain": "example"},
        "channel": {"id": channel, "name": "holds"},
        "message": {"type": "message", "ts": ts, "text": "held"},
        "response_url": "https://hooks.slack.com/actions/T0TEAM/1/xyz",
        "actions": [
            {"action_id": action_id, "block_id": "guardproxy_actions", "value": value,
             "type": "button", "action_ts": f"{int(time.time())}.000001",
             "text": {"type": "plain_text", "text": "Approve"}},
        ],
    }  # fmt: skip


def view_submission(user: str, view: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """A ``view_submission`` payload: ``view`` (as opened) submitted with ``values``
    (block id -> the plain text input's value, its action id the same as the block's)."""
    state = {
        block: {block: {"type": "plain_text_input", "value": value}}
        for block, value in values.items()
    }
    return {
        "type": "view_submission",
        "team": {"id": "T0TEAM", "domain": "example"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T0TEAM"},
        "api_app_id": "A0APP",
        "token": "deprecated-verification-token",
        "trigger_id": f"{int(time.time())}.1.submit",
        "view": {**view, "id": "V0000001", "team_id": "T0TEAM", "state": {"values": state},
                 "hash": "1700000000.abc"},
        "response_urls": [],
    }  # fmt: skip


def post_interaction(
    url: str, secret: str, payload: dict[str, Any], *, timestamp: int | None = None
) -> httpx.Response:
    """What Slack does: POST the signed payload to the app's request URL."""
    body = interaction_body(payload)
    return httpx.post(
        url, content=body, headers=signed_headers(secret, body, timestamp), timeout=10
    )

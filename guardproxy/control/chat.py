"""The chat callback listener: Slack's interactivity requests, on an address of its own.

Off unless ``--chat-listen HOST:PORT`` (``chat_listen`` in the config file) is given with
a ``slack:`` section. It serves one route, ``POST /slack/interactions``, and nothing
else: no control API, no console, no token. Every request must carry Slack's signature
(see :mod:`guardproxy.approvals.slack`), so it can sit behind the team's ingress, which
terminates TLS and forwards ``https://<public host>/slack/interactions`` here; Slack's
app configuration names that public URL as its interactivity request URL.
"""

from __future__ import annotations

import json
from typing import Any

import tornado.web

from guardproxy.approvals.slack import SlackInteractions
from guardproxy.httpserver import AppServer

__all__ = ["CHAT_BODY_LIMIT", "SLACK_PATH", "ChatServer", "make_chat_app"]

SLACK_PATH = "/slack/interactions"
CHAT_BODY_LIMIT = 1024 * 1024
"""Slack's interaction payloads carry the message clicked; far below this."""


class _JsonErrors(tornado.web.RequestHandler):
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"error": self._reason}))


class SlackInteractionHandler(_JsonErrors):
    def initialize(self, interactions: SlackInteractions) -> None:
        self.interactions = interactions

    async def post(self) -> None:
        headers = {name.lower(): value for name, value in self.request.headers.get_all()}
        reply = await self.interactions.handle(headers, self.request.body)
        self.set_status(reply.status)
        self.set_header("Cache-Control", "no-store")
        if reply.body is None:
            self.finish()
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(reply.body))


class _NotHere(_JsonErrors):
    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


def make_chat_app(interactions: SlackInteractions) -> tornado.web.Application:
    return tornado.web.Application(
        [(SLACK_PATH, SlackInteractionHandler, {"interactions": interactions})],
        default_handler_class=_NotHere,
        autoreload=False,
        debug=False,
    )


class ChatServer(AppServer):
    def __init__(self, interactions: SlackInteractions, host: str, port: int) -> None:
        super().__init__(
            make_chat_app(interactions), host, port, name="chat", max_body_size=CHAT_BODY_LIMIT
        )

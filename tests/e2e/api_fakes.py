"""Small loopback fakes of the REST APIs impact previews read: GitHub (repositories,
pull requests, comparisons, refs, under GitHub Enterprise's ``/api/v3``), the Cloud Asset
API and Compute Engine, and Azure Resource Manager. Each answers only its bearer token
and records every request (the ground truth for the order of a backup and a delete)."""

from __future__ import annotations

import json
from typing import Any, cast

from ._http import BaseHandler, UpstreamServer

JSON = dict[str, Any]


class _ApiHandler(BaseHandler):
    @property
    def api(self) -> ApiFake:
        return cast(ApiFake, self.server.upstream)

    def _dispatch(self) -> None:
        body = self.read_body()
        entry = self.record(body)
        scheme, _, token = (entry.header("Authorization") or "").partition(" ")
        if scheme.lower() not in ("bearer", "token") or token.strip() != self.api.token:
            self.send_json(401, {"message": "Bad credentials"})
            return
        if self.api.slow:
            self.pause(self.api.slow)
        key = (entry.method, entry.path)
        if entry.method == "POST" and entry.path in self.api.created:
            document = json.loads(body)
            self.api.refs[document["ref"]] = document["sha"]
            self.send_json(201, {"ref": document["ref"], "object": {"sha": document["sha"]}})
            return
        if key in self.api.routes:
            status, payload = self.api.routes[key]
            self.send_json(status, payload)
            return
        self.send_json(404, {"message": "Not Found"})

    do_GET = do_POST = do_DELETE = _dispatch  # noqa: N815


class ApiFake(UpstreamServer):
    """Answers ``routes[(method, path)]`` (status, JSON) for its token; a POST to a path in
    ``created`` stores ``{"ref", "sha"}`` in ``refs`` (GitHub's create-a-reference)."""

    def __init__(self, token: str) -> None:
        super().__init__(_ApiHandler)
        self.token = token
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}
        self.created: set[str] = set()
        self.refs: dict[str, str] = {}
        self.slow = 0.0

    def get(self, path: str, payload: Any, status: int = 200) -> None:
        self.routes[("GET", path)] = (status, payload)

    def delete(self, path: str, status: int = 204) -> None:
        self.routes[("DELETE", path)] = (status, {})


__all__ = ["ApiFake"]

"""Upstreams that require a bearer credential for real, on loopback.

* :class:`GithubServer`: GitHub's REST (``/user``, ``/repos/o/r``), GraphQL (``/graphql``)
  and smart-HTTP git (``git http-backend``), every request authenticated as GitHub
  does: ``Authorization: token T``, ``Bearer T`` or Basic with T as the password (or
  as the user); anything else is 401 ``Bad credentials`` (git's 401 carries
  ``WWW-Authenticate: Basic`` so git asks its credential helper).
* :class:`BearerApi`: a JSON API (GCP, Azure, Terraform Cloud) that answers only a
  request with ``Authorization: Bearer <one of its tokens>``, plus an OAuth token
  endpoint (``POST /token``) minting short-lived tokens for a refresh token it knows.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs

from ._http import BaseHandler, UpstreamServer
from .servers import GitHttpServer, _GitHandler


def bearer_of(authorization: str) -> str:
    """The token an Authorization value carries, as GitHub reads it."""
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() in ("token", "bearer"):
        return credential.strip()
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(credential).decode().partition(":")
        except ValueError:
            return ""
        return password if password not in ("", "x-oauth-basic") else user
    return ""


class _GithubHandler(_GitHandler):
    @property
    def github(self) -> GithubServer:
        return cast(GithubServer, self.server.upstream)

    def _dispatch(self) -> None:
        token = bearer_of(self.headers.get("Authorization", ""))
        path = self.path.partition("?")[0]
        is_git = ".git/" in path
        if token != self.github.token:
            body = self.read_body()
            self.record(body)
            headers = {"WWW-Authenticate": 'Basic realm="GitHub"'} if is_git else {}
            payload = json.dumps({"message": "Bad credentials", "status": "401"}).encode()
            self.send_bytes(401, payload, "application/json", headers)
            return
        if is_git:
            super()._dispatch()
            return
        body = self.read_body()
        self.record(body)
        if path == "/user":
            self.send_json(200, {"login": "octocat", "id": 1})
        elif path == "/graphql":
            self.send_json(200, {"data": {"viewer": {"login": "octocat"}}})
        elif path.startswith("/repos/"):
            self.send_json(200, {"full_name": path.removeprefix("/repos/"), "private": True})
        else:
            self.send_json(404, {"message": "Not Found"})

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch  # noqa: N815


class GithubServer(GitHttpServer):
    """GitHub on loopback: one repository (``/repo.git``) and a little API, for ``token``."""

    def __init__(self, root: Path, token: str) -> None:
        super().__init__(root)
        self.token = token
        handler = self._httpd.RequestHandlerClass
        assert handler is _GitHandler
        self._httpd.RequestHandlerClass = _GithubHandler

    def refused(self) -> int:
        """Requests answered 401 (the log holds every request, refused ones too)."""
        return sum(1 for r in self.requests if bearer_of(r.header("Authorization") or "")
                   != self.token)  # fmt: skip


class _BearerHandler(BaseHandler):
    @property
    def api(self) -> BearerApi:
        return cast(BearerApi, self.server.upstream)

    def _dispatch(self) -> None:
        body = self.read_body()
        entry = self.record(body)
        path = entry.path
        if path == "/token" and self.command == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            if not self.api.grants(form):
                self.send_json(400, {"error": "invalid_grant"})
                return
            self.send_json(200, {"access_token": self.api.mint(), "expires_in": 3600,
                                 "token_type": "Bearer"})  # fmt: skip
            return
        scheme, _, token = (entry.header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not self.api.valid(token.strip()):
            self.send_json(401, {"error": {"code": 401, "message": "Request had invalid "
                                           "authentication credentials.",
                                           "status": "UNAUTHENTICATED"}})  # fmt: skip
            return
        if path.rstrip("/").endswith("/projects"):  # Cloud Resource Manager, as gcloud reads it
            project = {"projectId": "prod-project", "name": "prod", "projectNumber": "1",
                       "lifecycleState": "ACTIVE"}  # fmt: skip
            self.send_json(200, {"projects": [project]})
            return
        self.send_json(200, {"path": path, "ok": True, "items": [{"name": "prod"}]})

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch  # noqa: N815


class BearerApi(UpstreamServer):
    """A JSON API answering only its own tokens: ``tokens`` (fixed) and those its token
    endpoint mints (for ``refresh_token``), valid ``lifetime`` seconds each."""

    def __init__(self, tokens: tuple[str, ...] = (), *, refresh_token: str = "",
                 service_account_pem: bytes = b"", lifetime: float = 3600.0) -> None:  # fmt: skip
        """``service_account_pem``: the public key of a service account whose signed JWT
        (the JWT-bearer grant google-auth sends) the token endpoint accepts."""
        super().__init__(_BearerHandler)
        self.tokens = set(tokens)
        self.refresh_token = refresh_token
        self.service_account_pem = service_account_pem
        self.lifetime = lifetime
        self._minted: dict[str, float] = {}
        self._lock = threading.Lock()

    def grants(self, form: dict[str, str]) -> bool:
        """Whether the token endpoint grants ``form``: the refresh token it knows, or a JWT
        signed by its service account, for this endpoint (verified by google-auth)."""
        if self.refresh_token and form.get("refresh_token") == self.refresh_token:
            return True
        if self.service_account_pem and form.get("grant_type", "").endswith(":jwt-bearer"):
            from google.auth import jwt  # noqa: PLC0415

            try:
                # google-auth addresses its assertion to Google's endpoint, wherever sent
                jwt.decode(form.get("assertion", ""), certs=self.service_account_pem,  # type: ignore[no-untyped-call]
                           audience="https://oauth2.googleapis.com/token")  # fmt: skip
            except ValueError:
                return False
            return True
        return False

    def mint(self) -> str:
        token = "ya29.REALminted" + secrets.token_urlsafe(16)
        with self._lock:
            self._minted[token] = time.time() + self.lifetime
        return token

    @property
    def minted(self) -> list[str]:
        with self._lock:
            return list(self._minted)

    def valid(self, token: str) -> bool:
        with self._lock:
            expires = self._minted.get(token)
        return token in self.tokens or (expires is not None and time.time() < expires)

    def answered(self) -> list[int]:
        """For each request but token requests: 200 if its bearer was valid when checked
        (recomputed from the log: the fixed tokens, minted ones still known)."""
        out = []
        for request in self.requests:
            if request.path == "/token":
                continue
            scheme, _, token = (request.header("Authorization") or "").partition(" ")
            known = token.strip() in self.tokens or token.strip() in self.minted
            out.append(200 if scheme.lower() == "bearer" and known else 401)
        return out


__all__ = ["BearerApi", "GithubServer", "bearer_of"]

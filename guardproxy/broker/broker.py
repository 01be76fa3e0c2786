"""The broker: what a session holds instead of the real credentials, how a request made
with them is authenticated at the guard, and how an approved one is authenticated again,
for real, just before it goes upstream.

``authenticate`` runs before any decision and does no I/O: a request carrying a session
credential must carry *this flow's session's* credential, valid (a SigV4 signature that
verifies with the session's secret), for a host the provider's real credential may be
sent to; anything else is an :class:`AuthError`, refused natively. It returns a
:class:`Grant` (or, for the session's own OAuth refresh, the answer itself); a request
without session credentials is not the broker's (None) and passes as it came.

``Grant.reauthenticate`` runs after the decision, on the approved request, and may
block (a refresh, an exec plugin) when ``Grant.needs_io()`` says so: the caller then
takes it off the event loop.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from guardproxy.broker import aws_sigv2, aws_sigv4
from guardproxy.broker.hosts import HostSet, is_metadata_host
from guardproxy.broker.kube import KubeCredential, user_credentials
from guardproxy.broker.rewrite import AuthError, CredentialError, Rewrite
from guardproxy.broker.session_keys import PLACEHOLDER_PREFIX, AwsSessionKey, SessionKeys
from guardproxy.broker.settings import AWS_HOSTS, BrokersConfig
from guardproxy.broker.sources import (
    AwsCredentials,
    CommandToken,
    GoogleToken,
    StaticToken,
    TokenSource,
    token_source,
)
from guardproxy.recognise.request import HttpRequest
from guardproxy.session.environment import kubeconfig_sources, merged_kubeconfig

_SESSIONS_KEPT = 1000
_GITHUB_DOT_COM = ("github.com", "api.github.com", "uploads.github.com")
GCP_REFRESH = "refresh"


@dataclass(frozen=True)
class Grant:
    """A request authenticated by its session credential, and how to authenticate it
    upstream. ``binding``: the credential a client certificate belongs to (one TLS
    connection upstream presents one)."""

    provider: str
    reauthenticate: Callable[[HttpRequest], Rewrite]
    needs_io: Callable[[], bool]
    binding: object | None = None


@dataclass(frozen=True)
class LocalAnswer:
    """The guard answers the request itself (the session's OAuth token refresh)."""

    provider: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass
class _Bearer:
    """A provider whose real credential is a bearer token."""

    provider: str
    hosts: HostSet
    source: TokenSource
    names: tuple[str, ...] = ("",)


@dataclass
class _SessionTable:
    aws: dict[str, AwsSessionKey] = field(default_factory=dict)
    placeholders: dict[str, tuple[str, str]] = field(default_factory=dict)


def _authorizations(request: HttpRequest) -> list[tuple[str, str, str]]:
    """(scheme, token, basic user) of every Authorization value holding a placeholder."""
    found = []
    for value in request.header_values("authorization"):
        if PLACEHOLDER_PREFIX not in value and value[:6].lower() != "basic ":
            continue
        scheme, _, credential = value.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credential, validate=True).decode()
                user, _, password = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            if password.startswith(PLACEHOLDER_PREFIX):
                found.append((scheme, password, user))
            elif user.startswith(PLACEHOLDER_PREFIX):
                found.append((scheme, user, ""))
        elif credential.startswith(PLACEHOLDER_PREFIX):
            found.append((scheme, credential, ""))
        else:
            found.append((scheme, "", ""))  # a placeholder somewhere odd: refused below
    return found


class Broker:
    """The guard's brokered providers for every session."""

    def __init__(self, config: BrokersConfig, key: bytes, environ: Mapping[str, str]) -> None:
        self.config = config
        self._keys = SessionKeys(key)
        self._environ = environ
        self._lock = threading.Lock()
        self._tables: OrderedDict[str, _SessionTable] = OrderedDict()
        self._kube: dict[str, dict[str, KubeCredential]] = {}
        self._kube_left: dict[str, dict[str, str]] = {}
        self._aws: dict[str, AwsCredentials] = {}
        self._aws_hosts = HostSet(AWS_HOSTS, tuple(config.aws.hosts) if config.aws else ())
        self._bearers: dict[str, _Bearer] = {}
        self._google: GoogleToken | None = None
        self._gcp_token_hosts = HostSet(tuple(config.gcp.token_hosts) if config.gcp else (), ())
        self._build_bearers()

    # -- set-up ------------------------------------------------------------------

    def _build_bearers(self) -> None:
        config, environ = self.config, self._environ
        if config.github is not None:
            defaults: list[str] = []
            configured: list[str] = []
            for host in config.github.hosts:
                if host == "github.com":
                    defaults.extend(_GITHUB_DOT_COM)
                else:
                    configured.append(host)
            source = token_source(
                config.github.token, "GitHub token", auto=["GH_TOKEN", "GITHUB_TOKEN"],
                auto_command=["gh", "auth", "token"], environ=environ,
            )  # fmt: skip
            self._bearers["github"] = _Bearer(
                "github", HostSet(tuple(defaults), tuple(configured)), source
            )
        if config.gcp is not None:
            self._google = GoogleToken(config.gcp.credentials, list(config.gcp.scopes))
            self._bearers["gcp"] = _Bearer(
                "gcp", _split_hosts(config.gcp.hosts, ("*.googleapis.com",)), self._google
            )
        if config.azure is not None:
            azure = config.azure
            if azure.token == "az":
                source = CommandToken(
                    "Azure token from `az account get-access-token`",
                    ["az", "account", "get-access-token", "--resource", azure.resource,
                     "--output", "json"],
                    json_field="accessToken", expiry_fields=("expires_on", "expiresOn"),
                )  # fmt: skip
            else:
                source = token_source(azure.token, "Azure token", auto=[], auto_command=None,
                                      environ=environ)  # fmt: skip
            self._bearers["azure"] = _Bearer(
                "azure", _split_hosts(azure.hosts, ("management.azure.com",)), source
            )
        if config.terraform is not None:
            terraform = config.terraform
            variables = [f"TF_TOKEN_{h.replace('.', '_').replace('-', '__')}"
                         for h in terraform.hosts]  # fmt: skip
            source = token_source(terraform.token, "Terraform Cloud token", auto=variables,
                                  auto_command=None, environ=environ)  # fmt: skip
            if terraform.token == "auto" and not any(environ.get(v) for v in variables):
                source = _terraform_credentials_file(terraform.hosts, environ) or source
            self._bearers["terraform"] = _Bearer(
                "terraform", _split_hosts(terraform.hosts, ("app.terraform.io",)), source
            )

    def check(self) -> None:
        """Resolve every real credential source once; CredentialError (one line, naming
        the source) for the first that cannot be."""
        if self.config.aws is not None:
            for session_profile, profile in self.config.aws.profiles.items():
                if profile not in self._aws:
                    try:
                        self._aws[profile] = AwsCredentials(profile)
                        self._aws[profile].check()
                    except CredentialError as error:
                        where = f"brokers.aws.profiles.{session_profile}"
                        raise CredentialError(f"{where}: {error}") from None
        for name, bearer in self._bearers.items():
            try:
                bearer.source.check()
            except CredentialError as error:
                raise CredentialError(f"brokers.{name}: {error}") from None

    @property
    def providers(self) -> list[str]:
        """The brokered providers, Kubernetes included (client certificates always)."""
        found = self.config.enabled()
        return found if "kubernetes" in found else [*found, "kubernetes-certificates"]

    @property
    def gcp_project(self) -> str:
        return self._google.project if self._google is not None else ""

    # -- sessions --------------------------------------------------------------------

    def register_session(self, session_id: str, kubeconfigs: list[Path]) -> dict[str, Any]:
        """Take a session's kubeconfig users in (their real credentials stay here) and
        return what the session holds instead (:meth:`offer`)."""
        sources = [p for p in kubeconfigs if p.is_file()]
        settings = self.config.kubernetes
        if not sources and settings is not None:
            sources = list(settings.kubeconfig) or kubeconfig_sources(self._environ)
        brokered: dict[str, KubeCredential] = {}
        left: dict[str, str] = {}
        if sources:
            merged = merged_kubeconfig(sources)
            brokered, left = user_credentials(
                merged, everything=settings is not None,
                exec_timeout=settings.exec_timeout_seconds if settings else 30.0,
                token_cache=settings.token_cache_seconds if settings else 300.0,
            )  # fmt: skip
            for name, credential in list(brokered.items()):
                try:
                    credential.check()
                except CredentialError as error:
                    # a stale context (a plugin since uninstalled) must not stop the session:
                    # its user stays as it is, and `run` lists it
                    del brokered[name]
                    left[name] = f"not brokered: {error}"
        with self._lock:
            self._kube[session_id] = brokered
            self._kube_left[session_id] = left
            self._tables.pop(session_id, None)
        return self.offer(session_id)

    def end_session(self, session_id: str) -> None:
        with self._lock:
            self._kube.pop(session_id, None)
            self._kube_left.pop(session_id, None)
            self._tables.pop(session_id, None)

    def offer(self, session_id: str) -> dict[str, Any]:
        """What the session holds: its AWS keys, its placeholders (JSON for `run`)."""
        config = self.config
        offer: dict[str, Any] = {"providers": self.providers}
        if config.aws is not None:
            offer["aws"] = {
                "profiles": {
                    name: {
                        "access_key_id": key.access_key_id,
                        "secret_access_key": key.secret_access_key,
                        "source_profile": config.aws.profiles[name],
                    }
                    for name in config.aws.profiles
                    for key in [self._keys.aws(session_id, name)]
                }
            }
        users = self._kube.get(session_id, {})
        offer["kubernetes"] = {
            "users": {u: self._keys.placeholder(session_id, "k8s", u) for u in users},
            "not_brokered": dict(self._kube_left.get(session_id, {})),
        }
        for name in self._bearers:
            entry: dict[str, Any] = {"token": self._keys.placeholder(session_id, name)}
            if name == "github":
                entry["hosts"] = list(config.github.hosts) if config.github else []
            if name == "terraform":
                entry["hosts"] = list(config.terraform.hosts) if config.terraform else []
            if name == "gcp":
                entry["refresh_token"] = self._keys.placeholder(session_id, "gcp", GCP_REFRESH)
                entry["project"] = self.gcp_project
                entry["scopes"] = list(config.gcp.scopes) if config.gcp else []
            offer[name] = entry
        return offer

    def _table(self, session_id: str) -> _SessionTable:
        with self._lock:
            table = self._tables.get(session_id)
            if table is not None:
                self._tables.move_to_end(session_id)
                return table
            table = _SessionTable()
            if self.config.aws is not None:
                for name in self.config.aws.profiles:
                    key = self._keys.aws(session_id, name)
                    table.aws[key.access_key_id] = key
            for user in self._kube.get(session_id, {}):
                token = self._keys.placeholder(session_id, "k8s", user)
                table.placeholders[token] = ("k8s", user)
            for name in self._bearers:
                table.placeholders[self._keys.placeholder(session_id, name)] = (name, "")
            if "gcp" in self._bearers:
                refresh = self._keys.placeholder(session_id, "gcp", GCP_REFRESH)
                table.placeholders[refresh] = ("gcp", GCP_REFRESH)
            self._tables[session_id] = table
            while len(self._tables) > _SESSIONS_KEPT:
                self._tables.popitem(last=False)
            return table

    # -- the request path ---------------------------------------------------------------

    def authenticate(
        self, session_id: str | None, request: HttpRequest, now: datetime
    ) -> Grant | LocalAnswer | None:
        """Before any decision: AuthError, or what authenticates the request upstream."""
        if is_metadata_host(request.host) and self._cloud_brokered():
            raise AuthError(
                "AccessDenied",
                "guardproxy brokers this session's cloud credentials, so the instance "
                "metadata service (the machine's own credentials) is not reachable from it",
            )
        if aws_sigv4.session_access_key(request) is not None:
            return self._aws_grant(session_id, request, now)
        if "gcp" in self._bearers and self._gcp_token_hosts.allows(
            request.scheme, request.host, request.port
        ):
            answer = self._gcp_token(session_id, request)
            if answer is not None:
                return answer
        found = _authorizations(request)
        claimed = [f for f in found if f[1] or f[0].lower() != "basic"]
        if not claimed:
            return None
        if len(claimed) > 1 or not claimed[0][1]:
            raise AuthError(
                "InvalidRequest",
                "the request carries guardproxy session credentials more than once or in a "
                "form guardproxy does not read",
            )
        scheme, token, basic_user = claimed[0]
        table = self._table(session_id) if session_id is not None else _SessionTable()
        owner = table.placeholders.get(token)
        if owner is None:
            raise AuthError(
                "Unauthorized",
                "the request carries a guardproxy session token that is not this session's "
                "(use the credentials `guardproxy run` gave this session)",
            )
        assert session_id is not None
        provider, name = owner
        if provider == "k8s":
            return self._kube_grant(session_id, name, request)
        bearer = self._bearers[provider]
        allowed = bearer.hosts.allows(request.scheme, request.host, request.port)
        if name == GCP_REFRESH or not allowed:
            raise AuthError(
                "AccessDenied",
                f"this session's {provider} token is valid for {provider}'s own hosts only, "
                f"not {request.host}",
            )

        def reauthenticate(_: HttpRequest) -> Rewrite:
            return _authorization(scheme, bearer.source.get(), basic_user)

        return Grant(provider, reauthenticate, bearer.source.needs_io)

    def _cloud_brokered(self) -> bool:
        config = self.config
        return config.aws is not None or config.gcp is not None or config.azure is not None

    def _aws_grant(self, session_id: str | None, request: HttpRequest, now: datetime) -> Grant:
        if self.config.aws is None:
            raise AuthError(
                "InvalidClientTokenId",
                "the request is signed with a guardproxy session key, but this guard does not "
                "broker AWS credentials",
            )
        table = self._table(session_id) if session_id is not None else _SessionTable()
        sigv2 = aws_sigv2.is_sigv2_query(request) and not request.header_values("authorization")
        if sigv2:
            old = aws_sigv2.parse(request)
            key = self._aws_key(table, old.access_key_id, request)
            aws_sigv2.verify(request, old, key.secret_access_key, now.timestamp())
        else:
            auth = aws_sigv4.parse(request)
            key = self._aws_key(table, auth.access_key_id, request)
            aws_sigv4.verify(request, auth, key.secret_access_key, now)
        source = self._aws[self.config.aws.profiles[key.profile]]

        def reauthenticate(approved: HttpRequest) -> Rewrite:
            if sigv2:
                return aws_sigv2.resign(approved, old, source.get())
            return aws_sigv4.resign(approved, auth, source.get())

        return Grant("aws", reauthenticate, source.needs_io)

    def _aws_key(self, table: _SessionTable, key_id: str, request: HttpRequest) -> AwsSessionKey:
        key = table.aws.get(key_id)
        if key is None:
            raise AuthError(
                "InvalidClientTokenId",
                "the access key is not this session's (use the credentials `guardproxy run` "
                "gave this session)",
            )
        if not self._aws_hosts.allows(request.scheme, request.host, request.port):
            raise AuthError(
                "AccessDenied",
                f"this session's AWS key is valid for AWS endpoints only, not {request.host} "
                "(add it to brokers.aws.hosts if it is one)",
            )
        return key

    def _kube_grant(self, session_id: str, user: str, request: HttpRequest) -> Grant:
        credential = self._kube.get(session_id, {}).get(user)
        if credential is None:
            raise AuthError("Unauthorized", "this session's Kubernetes user is no longer known")
        if (request.host.lower(), request.port) not in credential.servers:
            raise AuthError(
                "Forbidden",
                f"this session's token for kubeconfig user {user!r} is valid for that user's "
                f"clusters only, not {request.host}:{request.port}",
            )

        def reauthenticate(_: HttpRequest) -> Rewrite:
            token, certificate = credential.current()
            if token:
                return Rewrite(set_headers=(("Authorization", f"Bearer {token}"),),
                               client_certificate=certificate)  # fmt: skip
            return Rewrite(remove_headers=("Authorization",), client_certificate=certificate)

        return Grant("kubernetes", reauthenticate, credential.needs_io, binding=credential)

    def _gcp_token(self, session_id: str | None, request: HttpRequest) -> LocalAnswer | None:
        """google-auth's refresh of the session's ADC file (an authorized_user whose
        refresh token is the session's): answered here with the session's access token."""
        if request.method != "POST" or PLACEHOLDER_PREFIX.encode() not in request.body:
            return None
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        refresh = form.get("refresh_token", "")
        if not refresh.startswith(PLACEHOLDER_PREFIX):
            return None
        table = self._table(session_id) if session_id is not None else _SessionTable()
        if table.placeholders.get(refresh) != ("gcp", GCP_REFRESH):
            raise AuthError("invalid_grant", "the refresh token is not this session's")
        assert session_id is not None
        body = json.dumps({
            "access_token": self._keys.placeholder(session_id, "gcp"),
            "expires_in": 3599,
            "token_type": "Bearer",
            "scope": " ".join(self.config.gcp.scopes if self.config.gcp else []),
        }).encode()  # fmt: skip
        return LocalAnswer("gcp", 200, (("Content-Type", "application/json"),
                                        ("Cache-Control", "no-store")), body)  # fmt: skip


def _authorization(scheme: str, token: str, basic_user: str) -> Rewrite:
    if scheme.lower() == "basic":
        user, password = (basic_user, token) if basic_user else (token, "x-oauth-basic")
        value = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    else:
        value = f"{scheme} {token}"
    return Rewrite(set_headers=(("Authorization", value),))


def _split_hosts(hosts: list[str], defaults: tuple[str, ...]) -> HostSet:
    return HostSet(tuple(h for h in hosts if h in defaults),
                   tuple(h for h in hosts if h not in defaults))  # fmt: skip


def _terraform_credentials_file(hosts: list[str], environ: Mapping[str, str]) -> TokenSource | None:
    """terraform login's credentials.tfrc.json, as terraform reads it."""
    home = Path(environ.get("HOME", str(Path.home())))
    path = home / ".terraform.d" / "credentials.tfrc.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for host in hosts:
        token = (document.get("credentials") or {}).get(host, {}).get("token")
        if isinstance(token, str) and token:
            return StaticToken(f"Terraform Cloud token from {path}", token)
    return None


__all__ = ["GCP_REFRESH", "Broker", "Grant", "LocalAnswer"]

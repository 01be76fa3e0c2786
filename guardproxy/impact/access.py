"""How the guard reaches a held request's upstream for its own read-only calls.

The calls go to the held request's own server (its scheme, host and port: the same
origin, so a credential is never sent anywhere the request itself was not going),
authenticated the way the guard would authenticate the request itself:

* a brokered session credential: the broker's real one (the session's AWS profile,
  the Kubernetes user's certificate, token or exec plugin, the GitHub, GCP or Azure
  token), from :meth:`Broker.authenticate` and the grant's re-authentication;
* otherwise, for bearer providers and Kubernetes, the ``Authorization`` the held
  request carries (what the proxy presents upstream for it); for AWS, whose requests
  are signed rather than carrying a reusable credential, the guard's own environment
  (botocore's default chain: the source the broker would use).

TLS is verified with the proxy's upstream trust (certifi plus the CAs it learned).
:class:`HttpClient` is a small bounded JSON client (no environment proxy: like the
proxy's own upstream connections, it goes direct).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from guardproxy.action import Action, Provider
from guardproxy.broker import AuthError, Broker, CredentialError, Grant
from guardproxy.broker.sources import AwsCredentials
from guardproxy.impact.model import Budget, ImpactError
from guardproxy.recognise.request import HttpRequest

__all__ = ["USER_AGENT", "Access", "HttpClient", "Origin", "resolve_access"]

USER_AGENT = "guardproxy-impact"
"""How the guard's own calls name themselves upstream (previews and safety steps)."""

MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""A preview reads pages of lists, never more than this per answer."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")

    @classmethod
    def of(cls, request: HttpRequest) -> Origin:
        return cls(request.scheme, request.host, request.port)


@dataclass
class Access:
    """What the guard's own calls about one held request present upstream."""

    origin: Origin
    provider: Provider
    source: str
    """Where the credential comes from, for people: ``brokered``, ``the held request``."""
    headers: dict[str, str] = field(default_factory=dict)
    client_certificate: tuple[bytes, bytes] | None = None
    aws: AwsCredentials | None = None
    region: str = ""
    trust: Callable[[], Path | None] = lambda: None
    refresh: Callable[[HttpRequest], tuple[dict[str, str], tuple[bytes, bytes] | None]] | None = (
        None
    )
    """Re-authenticates a probe request (a brokered grant): fresh headers and certificate."""

    def auth_for(self, probe: HttpRequest) -> tuple[dict[str, str], tuple[bytes, bytes] | None]:
        if self.refresh is not None:
            return self.refresh(probe)
        return dict(self.headers), self.client_certificate

    def aws_credentials(self) -> Any:
        """botocore's frozen credentials (ImpactError if there are none)."""
        if self.aws is None:
            raise ImpactError(
                "no AWS credentials at the guard (broker AWS, or give the guard's environment "
                "an AWS profile)"
            )
        try:
            return self.aws.get()
        except CredentialError as error:
            raise ImpactError(str(error)) from None


def _aws_region(request: HttpRequest) -> str:
    for value in request.header_values("authorization"):
        _, found, rest = value.partition("Credential=")
        if found:
            parts = rest.partition(",")[0].split("/")
            if len(parts) >= 5:
                return parts[2]
    for key, value in request.query:
        if key.lower() == "x-amz-credential":
            parts = value.split("/")
            if len(parts) >= 5:
                return parts[2]
    return ""


def resolve_access(
    request: HttpRequest,
    action: Action,
    session_id: str,
    broker: Broker | None,
    now: datetime,
    trust: Callable[[], Path | None],
) -> Access:
    """How the guard's own calls about ``request`` are authenticated (see the module
    docstring); ImpactError (one line) when there is no way."""
    origin = Origin.of(request)
    provider = action.provider
    if provider is Provider.AWS:
        source = broker.aws_source(session_id, request) if broker is not None else None
        said = "brokered AWS profile"
        if source is None:
            said = "the guard's AWS environment"
            try:
                source = AwsCredentials("")
            except CredentialError as error:
                raise ImpactError(str(error)) from None
        return Access(origin, provider, said, aws=source, region=_aws_region(request), trust=trust)
    grant = None
    if broker is not None:
        try:
            found = broker.authenticate(session_id, request, now)
        except AuthError as error:
            raise ImpactError(f"the broker refused the held request: {error.message}") from None
        grant = found if isinstance(found, Grant) else None
    if grant is not None:
        granted = grant

        def refresh(probe: HttpRequest) -> tuple[dict[str, str], tuple[bytes, bytes] | None]:
            try:
                rewrite = granted.reauthenticate(probe)
            except (AuthError, CredentialError) as error:
                raise ImpactError(f"the brokered credential failed: {error}") from None
            return dict(rewrite.set_headers), rewrite.client_certificate

        return Access(
            origin, provider, f"brokered {grant.provider} credential", refresh=refresh, trust=trust
        )
    headers = {}
    authorization = request.header_values("authorization")
    if len(authorization) == 1:
        headers["Authorization"] = authorization[0]
    return Access(origin, provider, "the held request's credential", headers=headers, trust=trust)


# -- a bounded JSON client ------------------------------------------------------------


def _ssl_context(trust: Path | None, certificate: tuple[bytes, bytes] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(trust) if trust else None)
    if trust is None:
        with contextlib.suppress(ImportError):
            import certifi  # noqa: PLC0415 - mitmproxy's dependency: the proxy's own roots

            context.load_verify_locations(cafile=certifi.where())
    if certificate is not None:
        cert, key = certificate
        # ssl reads a certificate and key from files only: a private, short-lived one
        with tempfile.TemporaryDirectory(prefix="guardproxy-impact-") as directory:
            path = Path(directory) / "client.pem"
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(cert.rstrip(b"\n") + b"\n" + key)
            context.load_cert_chain(path)
    return context


class HttpClient:
    """GETs and POSTs to an :class:`Access`'s origin (or a sibling host the caller
    names), each taking one call of ``budget`` and at most its time left."""

    def __init__(self, access: Access, budget: Budget) -> None:
        self.access = access
        self.budget = budget

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        origin: Origin | None = None,
    ) -> tuple[int, bytes]:
        target = origin or self.access.origin
        timeout = self.budget.call()
        probe = HttpRequest(
            method=method,
            scheme=target.scheme,
            host=target.host,
            port=target.port,
            path=path,
            headers=(),
            body=body,
            host_header=target.host,
        )
        auth, certificate = self.access.auth_for(probe)
        sent = {"Accept": "application/json", "User-Agent": USER_AGENT, **auth}
        sent.update(headers or {})
        connection: http.client.HTTPConnection
        if target.scheme == "https":
            context = _ssl_context(self.access.trust(), certificate)
            connection = http.client.HTTPSConnection(
                target.host, target.port, timeout=timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
        try:
            connection.request(method, path, body=body or None, headers=sent)
            response = connection.getresponse()
            data = response.read(MAX_RESPONSE_BYTES + 1)
        except TimeoutError:
            raise ImpactError(f"{target.host} did not answer in time") from None
        except (OSError, http.client.HTTPException, ssl.SSLError) as error:
            raise ImpactError(f"cannot reach {target.host}:{target.port}: {error}") from None
        finally:
            connection.close()
        if len(data) > MAX_RESPONSE_BYTES:
            raise ImpactError(f"{target.host} answered more than the preview reads")
        return response.status, data

    def get_json(self, path: str, *, origin: Origin | None = None) -> Any:
        """The JSON answer of a GET; ImpactError naming the status otherwise."""
        status, data = self.request("GET", path, origin=origin)
        if status == 404:
            raise NotFound(path)
        if not 200 <= status < 300:
            raise ImpactError(f"GET {urlsplit(path).path} answered {status}{_why(data)}")
        try:
            return json.loads(data)
        except ValueError:
            raise ImpactError(f"GET {urlsplit(path).path} did not answer JSON") from None


class NotFound(ImpactError):  # noqa: N818 - an answer, named as the API names it
    """The upstream answered 404."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{urlsplit(path).path} does not exist")


def _why(data: bytes) -> str:
    try:
        document = json.loads(data)
    except ValueError:
        return ""
    message = ""
    if isinstance(document, dict):
        error = document.get("error")
        message = str(
            document.get("message")
            or (error.get("message") if isinstance(error, dict) else error)
            or ""
        )
    return f" ({message[:200]})" if message else ""

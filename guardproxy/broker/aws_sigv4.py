"""Verify a session's SigV4 signature, and sign the approved request again for real.

Both directions are botocore's own signers (``botocore.auth``: ``SigV4Auth``,
``S3SigV4Auth``, ``SigV4QueryAuth``, ``S3SigV4QueryAuth``): their canonical request,
string to sign and HMAC chain. Two things are pinned to what the agent sent, so that
the request verified is exactly the request received and the request re-signed is
exactly the request approved:

* the headers signed are the agent's ``SignedHeaders`` (botocore would choose its own);
* the request is taken as it came: the raw path and query, every header value in
  order, the body's bytes; re-signing changes only the auth (``Authorization``,
  ``X-Amz-Date``, ``X-Amz-Security-Token``; a presigned URL's ``X-Amz-*`` auth
  parameters, appended after the agent's own parameters, which stay byte for byte; an
  ``aws-chunked`` body's chunk signatures).

What AWS would refuse is refused here, in the same terms: a signature that does not
match (``SignatureDoesNotMatch``), a malformed or doubled authorization
(``IncompleteSignature``, ``InvalidRequest``), a date more than 15 minutes away
(``RequestTimeTooSkewed``), an expired presigned URL, a body whose hash is not the
declared ``x-amz-content-sha256`` (``XAmzContentSHA256Mismatch``). SigV4a
(``AWS4-ECDSA-P256-SHA256``) needs awscrt, which guardproxy does not ship: refused,
saying so.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from botocore.auth import (
    SIGV4_TIMESTAMP,
    UNSIGNED_PAYLOAD,
    S3SigV4Auth,
    S3SigV4QueryAuth,
    SigV4Auth,
    SigV4QueryAuth,
)
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.utils import percent_encode_sequence

from guardproxy.broker import aws_chunked
from guardproxy.broker.rewrite import AuthError, Rewrite
from guardproxy.broker.session_keys import AWS_KEY_PREFIX
from guardproxy.recognise.request import HttpRequest

ALGORITHM = "AWS4-HMAC-SHA256"
ALGORITHM_4A = "AWS4-ECDSA-P256-SHA256"
MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
S3_SIGNING_NAMES = frozenset({"s3", "s3-object-lambda", "s3-outposts", "s3express"})
"""Signing names whose canonical path is the path as sent (botocore's S3SigV4Auth);
every other service's path is normalised and encoded again (SigV4Auth)."""
_QUERY_AUTH = frozenset(
    {"x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-expires",
     "x-amz-signedheaders", "x-amz-signature", "x-amz-security-token"}
)  # fmt: skip
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class SigV4:
    """One SigV4 authentication as the agent sent it."""

    form: str  # "header" or "query"
    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str
    expires: int = 0  # query form only

    @property
    def is_s3(self) -> bool:
        return self.service in S3_SIGNING_NAMES


def session_access_key(request: HttpRequest) -> str | None:
    """The session access key id a request's AWS authentication names (a SigV4 or SigV2
    ``Authorization`` header, ``X-Amz-Credential`` or ``AWSAccessKeyId``), else None.

    A session key anywhere else (a search for "GPAK") is no authentication: not the
    broker's, and worthless upstream."""
    for value in request.header_values("authorization"):
        _, found, rest = value.partition("Credential=")
        if found and rest.startswith(AWS_KEY_PREFIX):
            return rest.partition("/")[0]
        if value.startswith(f"AWS {AWS_KEY_PREFIX}"):
            return value[4:].partition(":")[0]
    if AWS_KEY_PREFIX not in request.path:
        return None
    for key, value in request.query:
        if key.lower() in ("x-amz-credential", "awsaccesskeyid") and value.startswith(
            AWS_KEY_PREFIX
        ):
            return value.partition("/")[0]
    return None


def parse(request: HttpRequest) -> SigV4:
    """The request's one SigV4 authentication; AuthError if it has none, several, or
    a malformed one."""
    headers = [v for v in request.header_values("authorization") if v.strip()]
    query_keys = [k for k, _ in request.query if k.lower() in _QUERY_AUTH]
    if headers and query_keys:
        raise AuthError("InvalidRequest", "the request is authenticated twice (header and query)")
    if len(headers) > 1:
        raise AuthError("InvalidRequest", "the request has more than one Authorization header")
    if headers:
        if headers[0].startswith("AWS "):
            raise AuthError(
                "InvalidRequest",
                "SigV2 Authorization headers are not brokered: sign with SigV4 (every current "
                "SDK does)",
            )
        return _parse_header(request, headers[0])
    if query_keys:
        return _parse_query(request)
    raise AuthError("MissingAuthenticationToken", "the request is not signed")


def _credential(value: str) -> tuple[str, str, str, str]:
    parts = value.split("/")
    if len(parts) == 4 and parts[3] == "aws4_request":
        raise AuthError(
            "InvalidRequest",
            "SigV4a (AWS4-ECDSA-P256-SHA256) cannot be brokered: guardproxy re-signs with "
            "botocore's SigV4 signers only; use a regional endpoint instead of a "
            "multi-region one",
        )
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts[:4]):
        raise AuthError("IncompleteSignature", "the credential scope is malformed")
    return parts[0], parts[1], parts[2], parts[3]


def _signed_headers(value: str) -> tuple[str, ...]:
    names = tuple(value.split(";"))
    if not value or any(n != n.strip().lower() or not n for n in names):
        raise AuthError("IncompleteSignature", "SignedHeaders is malformed")
    if len(set(names)) != len(names) or "host" not in names:
        raise AuthError("IncompleteSignature", "SignedHeaders must name host, once each")
    return names


def _check_signature(value: str) -> str:
    if len(value) != 64 or not set(value) <= _HEX:
        raise AuthError("IncompleteSignature", "the signature is malformed")
    return value


def _parse_header(request: HttpRequest, value: str) -> SigV4:
    scheme, _, rest = value.strip().partition(" ")
    if scheme == ALGORITHM_4A:
        _credential("x/y/z/aws4_request")  # raises the SigV4a refusal
    if scheme != ALGORITHM:
        raise AuthError("IncompleteSignature", f"unsupported authorization scheme {scheme!r}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, equals, field_value = part.strip().partition("=")
        if not equals or name in fields:
            raise AuthError("IncompleteSignature", "the Authorization header is malformed")
        fields[name] = field_value
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise AuthError(
            "IncompleteSignature", "Authorization needs Credential, SignedHeaders and Signature"
        )
    key_id, date, region, service = _credential(fields["Credential"])
    dates = request.header_values("x-amz-date")
    if len(dates) != 1:
        raise AuthError(
            "IncompleteSignature", "a header-signed request needs exactly one X-Amz-Date"
        )
    signed = _signed_headers(fields["SignedHeaders"])
    if "x-amz-date" not in signed:
        raise AuthError("IncompleteSignature", "SignedHeaders must include x-amz-date")
    return SigV4(
        "header", key_id, date, region, service, signed,
        _check_signature(fields["Signature"]), dates[0].strip(),
    )  # fmt: skip


def _parse_query(request: HttpRequest) -> SigV4:
    found: dict[str, str] = {}
    for key, value in request.query:
        lowered = key.lower()
        if lowered in _QUERY_AUTH:
            if lowered in found:
                raise AuthError("InvalidRequest", f"{key} is given more than once")
            found[lowered] = value
    algorithm = found.get("x-amz-algorithm", "")
    if algorithm == ALGORITHM_4A:
        _credential("x/y/z/aws4_request")
    missing = _QUERY_AUTH - {"x-amz-security-token"} - set(found)
    if algorithm != ALGORITHM or missing:
        raise AuthError("AuthorizationQueryParametersError", "the presigned URL is incomplete")
    key_id, date, region, service = _credential(found["x-amz-credential"])
    expires_text = found["x-amz-expires"]
    if not expires_text.isdigit() or not 0 < int(expires_text) <= MAX_PRESIGN_SECONDS:
        raise AuthError(
            "AuthorizationQueryParametersError", "X-Amz-Expires must be 1 to 604800 seconds"
        )
    return SigV4(
        "query", key_id, date, region, service, _signed_headers(found["x-amz-signedheaders"]),
        _check_signature(found["x-amz-signature"]), found["x-amz-date"], int(expires_text),
    )  # fmt: skip


# -- botocore's signers, with the agent's headers and request --------------------------


class _Headers:
    """The header mapping botocore's signers use (``HTTPHeaders``: case-insensitive,
    ``h[name] = value`` adds a value, ``del h[name]`` removes every value, ``get_all``),
    over a plain list: ``HTTPHeaders`` is an ``email.message.Message``, whose checks of
    every header it stores cost more than the signing itself."""

    def __init__(self, pairs: list[tuple[str, str]] | None = None) -> None:
        self._pairs = pairs if pairs is not None else []

    def __setitem__(self, name: str, value: str) -> None:
        self._pairs.append((name, value))

    def __delitem__(self, name: str) -> None:
        lowered = name.lower()
        self._pairs = [(k, v) for k, v in self._pairs if k.lower() != lowered]

    def __getitem__(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self._pairs if k.lower() == lowered), None)

    def __contains__(self, name: object) -> bool:
        lowered = str(name).lower()
        return any(k.lower() == lowered for k, _ in self._pairs)

    def __iter__(self) -> Any:
        return iter([k for k, _ in self._pairs])

    def get(self, name: str, default: str | None = None) -> str | None:
        found = self[name]
        return default if found is None else found

    def get_all(self, name: str, failobj: Any = None) -> list[str] | Any:
        lowered = name.lower()
        found = [v for k, v in self._pairs if k.lower() == lowered]
        return found or failobj

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)


class _Request(AWSRequest):
    """An AWSRequest whose body is the bytes given (botocore would prepare it anew)."""

    @property
    def body(self) -> bytes:  # type: ignore[override]  # the stubs say str; botocore: bytes
        data = self.data
        return data if isinstance(data, bytes) else b""


def _pinned_headers(signer: Any, request: AWSRequest) -> _Headers:
    """The headers ``signer`` signs: exactly the names it was given, every value."""
    signed = signer.signed
    pairs = [(k.lower(), v) for k, v in request.headers.items() if k.lower() in signed]
    if "host" in signed and not any(k == "host" for k, _ in pairs):
        pairs.append(("host", request.context["host"]))
    return _Headers(pairs)


def _header_auth_before_signing(signer: Any, request: AWSRequest) -> None:
    """Replace the auth headers only: a fresh X-Amz-Date, the real session token."""
    for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
        del request.headers[name]
    request.headers["X-Amz-Date"] = request.context["timestamp"]
    if signer.credentials.token:
        request.headers["X-Amz-Security-Token"] = signer.credentials.token


def _query_auth_before_signing(signer: Any, request: AWSRequest) -> None:
    """botocore's SigV4QueryAuth auth parameters, appended to the query as it came
    (botocore would parse it into a dict and encode it again: repeated keys lost)."""
    auth_params = {
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": signer.scope(request),
        "X-Amz-Date": request.context["timestamp"],
        "X-Amz-Expires": signer._expires,  # botocore's own field
        "X-Amz-SignedHeaders": signer.signed_headers(signer.headers_to_sign(request)),
    }
    if signer.credentials.token:
        auth_params["X-Amz-Security-Token"] = signer.credentials.token
    base, _, query = str(request.url).partition("?")
    encoded = percent_encode_sequence(auth_params)
    request.url = f"{base}?{query}&{encoded}" if query else f"{base}?{encoded}"


class _HeaderSigner(SigV4Auth):
    def __init__(self, credentials: Any, service: str, region: str, signed: set[str]) -> None:
        super().__init__(credentials, service, region)
        self.signed = signed

    headers_to_sign = _pinned_headers  # type: ignore[assignment]  # a lighter HTTPHeaders
    _modify_request_before_signing = _header_auth_before_signing


class _S3HeaderSigner(S3SigV4Auth):
    def __init__(self, credentials: Any, service: str, region: str, signed: set[str]) -> None:
        super().__init__(credentials, service, region)
        self.signed = signed

    headers_to_sign = _pinned_headers  # type: ignore[assignment]  # a lighter HTTPHeaders
    _modify_request_before_signing = _header_auth_before_signing


class _QuerySigner(SigV4QueryAuth):
    def __init__(
        self, credentials: Any, service: str, region: str, signed: set[str], expires: int
    ) -> None:
        super().__init__(credentials, service, region, expires)
        self.signed = signed

    headers_to_sign = _pinned_headers  # type: ignore[assignment]  # a lighter HTTPHeaders
    _modify_request_before_signing = _query_auth_before_signing


class _S3QuerySigner(S3SigV4QueryAuth):
    def __init__(
        self, credentials: Any, service: str, region: str, signed: set[str], expires: int
    ) -> None:
        super().__init__(credentials, service, region, expires)
        self.signed = signed

    headers_to_sign = _pinned_headers  # type: ignore[assignment]  # a lighter HTTPHeaders
    _modify_request_before_signing = _query_auth_before_signing


def _signer(auth: SigV4, credentials: ReadOnlyCredentials, signed: set[str]) -> SigV4Auth:
    if auth.form == "query":
        query_class = _S3QuerySigner if auth.is_s3 else _QuerySigner
        return query_class(credentials, auth.service, auth.region, signed, auth.expires)
    header_class = _S3HeaderSigner if auth.is_s3 else _HeaderSigner
    return header_class(credentials, auth.service, auth.region, signed)


def _authority(request: HttpRequest) -> str:
    """What the agent signed as ``host`` when it sent no Host header (HTTP/2)."""
    if request.host_header:
        return request.host_header
    default = {"http": 80, "https": 443}.get(request.scheme)
    host = f"[{request.host}]" if ":" in request.host else request.host
    return host if request.port == default else f"{host}:{request.port}"


def _aws_request(request: HttpRequest, target: str) -> _Request:
    aws = _Request(method=request.method, url=f"{request.scheme}://_{target}", data=request.body)
    aws.headers = _Headers(list(request.headers))  # type: ignore[assignment]
    aws.context["host"] = request.header("host") or _authority(request)
    return aws


def _without_signature(request: HttpRequest) -> str:
    """The request target without its X-Amz-Signature parameter (kept byte for byte)."""
    return _query_without(request, frozenset({"x-amz-signature"}))


def _without_query_auth(request: HttpRequest) -> str:
    return _query_without(request, _QUERY_AUTH)


def _query_without(request: HttpRequest, names: frozenset[str]) -> str:
    path, _, query = request.path.partition("?")
    kept = [p for p in query.split("&") if unquote(p.partition("=")[0]).lower() not in names]
    return f"{path}?{'&'.join(kept)}" if kept else path


# -- verify -------------------------------------------------------------------------


def _timestamp(auth: SigV4) -> datetime:
    """X-Amz-Date (``SIGV4_TIMESTAMP``, yyyymmddThhmmssZ) read by position: strptime costs
    a tenth of the whole verification."""
    text = auth.timestamp
    if len(text) != 16 or text[8] != "T" or text[15] != "Z" or not (
        text[:8] + text[9:15]).isdigit():  # fmt: skip
        raise AuthError("IncompleteSignature", f"X-Amz-Date is not {SIGV4_TIMESTAMP}")
    try:
        signed_at = datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[9:11]),
                             int(text[11:13]), int(text[13:15]), tzinfo=UTC)  # fmt: skip
    except ValueError:
        raise AuthError("IncompleteSignature", "X-Amz-Date is not a date") from None
    if auth.timestamp[:8] != auth.date:
        raise AuthError("SignatureDoesNotMatch", "the credential scope's date is not X-Amz-Date's")
    return signed_at


def verify(request: HttpRequest, auth: SigV4, secret: str, now: datetime) -> None:
    """AuthError unless ``auth`` is a valid signature of ``request`` by ``secret``."""
    signed_at = _timestamp(auth)
    if auth.form == "header":
        if abs(now - signed_at) > MAX_SKEW:
            raise AuthError(
                "RequestTimeTooSkewed",
                "the request's date is more than 15 minutes from the guard's clock",
            )
        target = request.path
    else:
        if now - signed_at > timedelta(seconds=auth.expires):
            raise AuthError("AccessDenied", "the presigned URL has expired")
        if signed_at - now > MAX_SKEW:
            raise AuthError("AccessDenied", "the presigned URL is dated in the future")
        target = _without_signature(request)
    payload = _payload_hash(request, auth)
    credentials = ReadOnlyCredentials(auth.access_key_id, secret, None)
    signer = _signer(auth, credentials, set(auth.signed_headers))
    missing = set(auth.signed_headers) - {k for k, _ in request.headers} - {"host"}
    if missing:
        raise AuthError("SignatureDoesNotMatch", f"signed header {sorted(missing)[0]} is absent")
    aws = _aws_request(request, target)
    aws.context["timestamp"] = auth.timestamp
    canonical = signer.canonical_request(aws)
    expected = signer.signature(signer.string_to_sign(aws, canonical), aws)
    if not hmac.compare_digest(expected, auth.signature):
        raise AuthError(
            "SignatureDoesNotMatch",
            "the request signature does not match the session's credentials",
        )
    if payload is not None and aws_chunked.is_signed(payload):
        aws_chunked.verify(
            request.body, payload, signer, aws, auth.signature, auth.timestamp,
            signer.credential_scope(aws),
        )  # fmt: skip


def _payload_hash(request: HttpRequest, auth: SigV4) -> str | None:
    values = request.header_values("x-amz-content-sha256")
    if len(values) > 1:
        raise AuthError("InvalidRequest", "x-amz-content-sha256 is given more than once")
    if not values:
        return None
    value = values[0]
    if value in (UNSIGNED_PAYLOAD, aws_chunked.UNSIGNED_TRAILER) or aws_chunked.is_signed(value):
        return value
    if len(value) == 64 and set(value) <= _HEX:
        if hashlib.sha256(request.body).hexdigest() != value:
            raise AuthError(
                "XAmzContentSHA256Mismatch",
                "the body's SHA-256 is not the declared x-amz-content-sha256",
            )
        return value
    if "ECDSA" in value:
        _credential("x/y/z/aws4_request")
    raise AuthError("InvalidArgument", "x-amz-content-sha256 has an unknown value")


# -- re-sign ------------------------------------------------------------------------


def resign(request: HttpRequest, auth: SigV4, credentials: ReadOnlyCredentials) -> Rewrite:
    """The approved request signed with ``credentials`` (a fresh date), changed in its
    authentication only."""
    signed = set(auth.signed_headers) - {"x-amz-security-token"}
    if auth.form == "header":
        signed.add("x-amz-date")
    if credentials.token and auth.form == "header":
        signed.add("x-amz-security-token")
    signer = _signer(auth, credentials, signed)
    target = request.path if auth.form == "header" else _without_query_auth(request)
    aws = _aws_request(request, target)
    signer.add_auth(aws)
    if auth.form == "query":
        query = str(aws.url).partition("?")[2]
        return Rewrite(path=f"{request.path.partition('?')[0]}?{query}")
    new_headers = [("Authorization", aws.headers["Authorization"]),
                   ("X-Amz-Date", aws.headers["X-Amz-Date"])]  # fmt: skip
    removed: tuple[str, ...] = ()
    if credentials.token:
        new_headers.append(("X-Amz-Security-Token", credentials.token))
    else:
        removed = ("X-Amz-Security-Token",)
    body = None
    payload = request.header("x-amz-content-sha256")
    if aws_chunked.is_signed(payload):
        seed = aws.headers["Authorization"].rpartition("Signature=")[2]
        body = aws_chunked.resign(
            request.body, payload, signer, aws, seed, aws.context["timestamp"],
            signer.credential_scope(aws),
        )  # fmt: skip
    return Rewrite(set_headers=tuple(new_headers), remove_headers=removed, body=body)


__all__ = ["SigV4", "parse", "resign", "session_access_key", "verify"]

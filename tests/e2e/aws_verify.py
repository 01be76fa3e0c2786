"""An AWS front door that checks signatures for real, in front of moto.

moto answers whatever it is sent; AWS checks every request's SigV4 signature against
the secret of the access key it names. :class:`SigV4Gate` does that here: it knows the
*real* credentials (access key, secret, and the session token a temporary key must come
with, which may expire), recomputes each request's signature with botocore from the
real secret, over the request exactly as it arrived (raw target, header values, body),
and answers 403 in AWS's own terms (``InvalidAccessKeyId``, ``SignatureDoesNotMatch``,
``InvalidToken``, ``ExpiredToken``, ``XAmzContentSHA256Mismatch``) before moto sees it.

It is written apart from guardproxy's broker on purpose (its own parsing, its own
canonical-request assembly around botocore's primitives), so a mistake in the broker
cannot be mirrored here: for the header form it lets botocore's ``SigV4Auth`` build the
canonical request over the signed headers; for presigned URLs it assembles the canonical
request from botocore's pieces itself; aws-chunked chunk signatures are checked by its
own chunk reader.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import unquote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import ReadOnlyCredentials

S3_NAMES = {"s3", "s3-object-lambda", "s3-outposts"}


@dataclass
class RealKey:
    """A real AWS credential: temporary ones need their token, valid until ``expires``."""

    access_key: str
    secret: str
    token: str | None = None
    expires: float | None = None


@dataclass
class Verdict:
    ok: bool
    code: str = ""
    message: str = ""
    access_key: str = ""
    token: str | None = None


@dataclass
class KeyRing:
    """The keys the fake AWS accepts (thread-safe: tests add keys while it serves)."""

    keys: dict[str, RealKey] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: RealKey) -> None:
        with self.lock:
            self.keys[key.access_key] = key

    def get(self, access_key: str) -> RealKey | None:
        with self.lock:
            return self.keys.get(access_key)


class _Pinned(SigV4Auth):
    def __init__(self, creds: ReadOnlyCredentials, service: str, region: str,
                 names: list[str], host: str) -> None:  # fmt: skip
        super().__init__(creds, service, region)
        self.names = names
        self.host = host

    def headers_to_sign(self, request: Any) -> HTTPHeaders:
        found = HTTPHeaders()
        for name, value in request.headers.items():
            if name.lower() in self.names:
                found[name.lower()] = value
        if "host" in self.names and "host" not in found:
            found["host"] = self.host
        return found


class _PinnedS3(_Pinned):
    def _normalize_url_path(self, path: str) -> str:
        return path  # S3 signs the path as sent (botocore's S3SigV4Auth)


def _fail(code: str, message: str) -> Verdict:
    return Verdict(False, code, message)


def _query_pairs(query: str) -> list[tuple[str, str]]:
    return [(p.partition("=")[0], p.partition("=")[2]) for p in query.split("&") if p]


def check(
    ring: KeyRing,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    scheme: str = "http",
    now: float | None = None,
) -> Verdict:
    """Whether AWS would accept this request: the signature, the token, the body hash."""
    now = time.time() if now is None else now
    lowered = [(k.lower(), v) for k, v in headers]
    auth = [v for k, v in lowered if k == "authorization"]
    path, _, query = target.partition("?")
    pairs = _query_pairs(query)
    presigned = {unquote(k).lower(): unquote(v) for k, v in pairs
                 if unquote(k).lower().startswith("x-amz-")}  # fmt: skip
    if auth:
        fields = dict(part.strip().split("=", 1) for part in auth[0].split(" ", 1)[1].split(","))
        credential, names = fields["Credential"], fields["SignedHeaders"].split(";")
        given, stamp = fields["Signature"], dict(lowered).get("x-amz-date", "")
    elif "x-amz-signature" in presigned:
        credential, names = (
            presigned["x-amz-credential"],
            presigned["x-amz-signedheaders"].split(";"),
        )
        given, stamp = presigned["x-amz-signature"], presigned["x-amz-date"]
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        if now > signed_at + int(presigned["x-amz-expires"]):
            return _fail("AccessDenied", "Request has expired")
    elif any(unquote(k) == "AWSAccessKeyId" for k, _ in pairs):
        return _check_v2(ring, method, path, pairs, lowered, now)
    else:
        return _fail("MissingAuthenticationToken", "Request is missing Authentication Token")
    access_key, date, region, service, _ = credential.split("/")
    key = ring.get(access_key)
    if key is None:
        return _fail("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist")
    token = presigned.get("x-amz-security-token") or dict(lowered).get("x-amz-security-token")
    if key.token is not None and token != key.token:
        return _fail("InvalidToken", "The provided token is malformed or otherwise invalid")
    if key.expires is not None and now >= key.expires:
        return _fail("ExpiredToken", "The security token included in the request is expired")
    if stamp[:8] != date:
        return _fail("SignatureDoesNotMatch", "date mismatch")
    host = dict(lowered).get("host", "")
    signer_class = _PinnedS3 if service in S3_NAMES else _Pinned
    signer = signer_class(ReadOnlyCredentials(access_key, key.secret, token), service,
                          region, names, host)  # fmt: skip
    request = AWSRequest(method=method, url=f"{scheme}://{host}{path}", data=body)
    for name, value in headers:
        request.headers[name] = value
    request.context["timestamp"] = stamp
    content = dict(lowered).get("x-amz-content-sha256")
    if auth:
        if content and len(content) == 64 and hashlib.sha256(body).hexdigest() != content:
            return _fail("XAmzContentSHA256Mismatch", "body hash mismatch")
        request.url = f"{scheme}://{host}{target}"
        canonical = signer.canonical_request(request)
    else:
        kept = [f"{k}={v}" for k, v in pairs if unquote(k).lower() != "x-amz-signature"]
        canonical_query = "&".join(sorted(kept))  # already encoded by the client
        headers_to_sign = signer.headers_to_sign(request)
        payload = "UNSIGNED-PAYLOAD" if service in S3_NAMES else hashlib.sha256(body).hexdigest()
        canonical = "\n".join([
            method, cast(Any, signer)._normalize_url_path(path), canonical_query,
            signer.canonical_headers(headers_to_sign) + "\n",
            signer.signed_headers(headers_to_sign), payload,
        ])  # fmt: skip
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, given):
        return _fail("SignatureDoesNotMatch", "The request signature we calculated does not match")
    if content in ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                   "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"):  # fmt: skip
        scope = f"{date}/{region}/{service}/aws4_request"
        problem = _check_chunks(body, signer, request, given, stamp, scope,
                                trailer=content.endswith("TRAILER"))  # fmt: skip
        if problem:
            return _fail("SignatureDoesNotMatch", problem)
    return Verdict(True, access_key=access_key, token=token)


def _check_v2(ring: KeyRing, method: str, path: str, pairs: list[tuple[str, str]],
              headers: list[tuple[str, str]], now: float) -> Verdict:  # fmt: skip
    """S3's SigV2 query authentication, per the S3 developer guide ("Query string request
    authentication alternative"): path-style requests only (the fake is one host)."""
    query = {unquote(k): unquote(v) for k, v in pairs}
    key = ring.get(query["AWSAccessKeyId"])
    if key is None:
        return _fail("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist")
    if now > int(query["Expires"]):
        return _fail("AccessDenied", "Request has expired")
    token = query.get("x-amz-security-token")
    if key.token is not None and token != key.token:
        return _fail("InvalidToken", "The provided token is malformed or otherwise invalid")
    given = dict(headers)
    amz = f"x-amz-security-token:{token}\n" if token else ""
    to_sign = (f"{method}\n{given.get('content-md5', '')}\n{given.get('content-type', '')}\n"
               f"{query['Expires']}\n{amz}{path}")  # fmt: skip
    expected = base64.b64encode(
        hmac.new(key.secret.encode(), to_sign.encode(), hashlib.sha1).digest()
    ).decode()
    if not hmac.compare_digest(expected, query["Signature"]):
        return _fail("SignatureDoesNotMatch", "The request signature we calculated does not match")
    return Verdict(True, access_key=key.access_key, token=token)


def _check_chunks(body: bytes, signer: Any, request: Any, seed: str, stamp: str, scope: str,
                  *, trailer: bool) -> str:  # fmt: skip
    empty = hashlib.sha256(b"").hexdigest()
    previous, rest = seed, body
    while True:
        header, sep, rest = rest.partition(b"\r\n")
        if not sep or b";chunk-signature=" not in header:
            return "chunk header"
        size_hex, _, signature = header.decode().partition(";chunk-signature=")
        size = int(size_hex, 16)
        data, rest = rest[:size], rest[size:]
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", stamp, scope, previous, empty,
                             hashlib.sha256(data).hexdigest()])  # fmt: skip
        if signer.signature(to_sign, request) != signature:
            return "chunk signature"
        previous = signature
        if size == 0:
            break
        if not rest.startswith(b"\r\n"):
            return "chunk end"
        rest = rest[2:]
    if trailer:
        lines = rest.split(b"\r\n")
        trailers = [ln for ln in lines if ln and not ln.startswith(b"x-amz-trailer-signature:")]
        [signature_line] = [ln for ln in lines if ln.startswith(b"x-amz-trailer-signature:")]
        digest = hashlib.sha256(b"".join(t + b"\n" for t in trailers)).hexdigest()
        to_sign = "\n".join(["AWS4-HMAC-SHA256-TRAILER", stamp, scope, previous, digest])
        if signer.signature(to_sign, request) != signature_line.partition(b":")[2].decode():
            return "trailer signature"
    elif rest != b"\r\n":
        return "chunk trailer"
    return ""


def decode_chunked(body: bytes) -> bytes:
    """The payload of a signed or unsigned aws-chunked body (for the app behind)."""
    out, rest = bytearray(), body
    while True:
        header, _, rest = rest.partition(b"\r\n")
        size = int(header.split(b";")[0], 16)
        out += rest[:size]
        rest = rest[size + 2 :]
        if size == 0:
            return bytes(out)


class SigV4Gate:
    """WSGI middleware: AWS's signature check in front of ``app`` (moto)."""

    def __init__(self, app: WSGIApplication, ring: KeyRing, *, scheme: str = "http") -> None:
        self.app = app
        self.ring = ring
        self.scheme = scheme
        self.verdicts: list[Verdict] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith("/moto-api/"):
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read()
        headers = [(k[5:].replace("_", "-").lower(), str(v)) for k, v in environ.items()
                   if k.startswith("HTTP_")]  # fmt: skip
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(name):
                headers.append((name.replace("_", "-").lower(), str(environ[name])))
        target = environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
        verdict = check(self.ring, environ["REQUEST_METHOD"], target, headers, body,
                        scheme=self.scheme)  # fmt: skip
        self.verdicts.append(verdict)
        if not verdict.ok:
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error>'
                f"<Type>Sender</Type><Code>{verdict.code}</Code><Message>{verdict.message}"
                "</Message></Error><RequestId>fake</RequestId></ErrorResponse>"
            ).encode()
            start_response("403 Forbidden", [("Content-Type", "text/xml"),
                                             ("Content-Length", str(len(xml)))])  # fmt: skip
            return [xml]
        content = dict(headers).get("x-amz-content-sha256", "")
        if content.startswith("STREAMING-"):
            body = decode_chunked(body)
            environ["HTTP_X_AMZ_CONTENT_SHA256"] = "UNSIGNED-PAYLOAD"
            environ.pop("HTTP_CONTENT_ENCODING", None)
        from io import BytesIO  # noqa: PLC0415

        environ["wsgi.input"] = BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


__all__ = ["KeyRing", "RealKey", "SigV4Gate", "Verdict", "check", "decode_chunked"]

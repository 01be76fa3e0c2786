"""S3's presigned URLs of the older kind (SigV2 query auth: ``AWSAccessKeyId``,
``Signature``, ``Expires``), which the AWS CLI v1's ``aws s3 presign`` still makes.

Verified and signed again with botocore's ``HmacV1QueryAuth`` (its canonical string and
HMAC-SHA1), the expiry kept as the agent set it (an absolute time), the agent's other
query parameters kept byte for byte. The canonical resource names the bucket: from the
path (path-style), or from the host name of a virtual-hosted AWS endpoint
(``bucket.s3.region.amazonaws.com``), as S3 reads it. A SigV2 ``Authorization`` header
is not brokered (botocore signs every S3 request with SigV4): refused.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from botocore.auth import HmacV1QueryAuth
from botocore.compat import HTTPHeaders
from botocore.credentials import ReadOnlyCredentials

from guardproxy.broker.rewrite import AuthError, Rewrite
from guardproxy.recognise.request import HttpRequest

_AUTH_PARAMS = frozenset({"awsaccesskeyid", "signature", "expires", "x-amz-security-token"})
_VIRTUAL_HOST = re.compile(r"^(?P<bucket>.+)\.s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com(?:\.cn)?$")


@dataclass(frozen=True)
class SigV2Query:
    access_key_id: str
    signature: str
    expires: int


def is_sigv2_query(request: HttpRequest) -> bool:
    keys = {k.lower() for k, _ in request.query}
    return "awsaccesskeyid" in keys or ("signature" in keys and "expires" in keys)


def parse(request: HttpRequest) -> SigV2Query:
    found: dict[str, str] = {}
    for key, value in request.query:
        lowered = key.lower()
        if lowered in _AUTH_PARAMS:
            if lowered in found:
                raise AuthError("InvalidRequest", f"{key} is given more than once")
            found[lowered] = value
    if not {"awsaccesskeyid", "signature", "expires"} <= set(found):
        raise AuthError("AccessDenied", "the presigned URL is incomplete")
    if not found["expires"].isdigit():
        raise AuthError("AccessDenied", "Expires is not a time")
    return SigV2Query(found["awsaccesskeyid"], found["signature"], int(found["expires"]))


class _Signer(HmacV1QueryAuth):
    def __init__(self, credentials: Any, expires_at: int) -> None:
        super().__init__(credentials)
        self._at = expires_at

    def _get_date(self) -> str:
        return str(self._at)


def _auth_path(request: HttpRequest, path: str) -> str:
    found = _VIRTUAL_HOST.match(request.host.lower())
    if found is None:
        return path
    return f"/{found['bucket']}{path}"


def _kept_query(request: HttpRequest) -> str:
    query = request.path.partition("?")[2]
    kept = [p for p in query.split("&") if p and unquote(p.partition("=")[0]).lower()
            not in _AUTH_PARAMS]  # fmt: skip
    return "&".join(kept)


def _signature(request: HttpRequest, credentials: Any, expires: int) -> str:
    signer = _Signer(credentials, expires)
    path = request.path.partition("?")[0]
    split = urlsplit(f"{request.scheme}://_{path}?{_kept_query(request)}")
    headers = HTTPHeaders()
    for name, value in request.headers:
        if name not in ("date", "x-amz-security-token"):
            headers[name] = value
    auth_path = _auth_path(request, path)
    return str(signer.get_signature(request.method, split, headers, auth_path=auth_path))  # type: ignore[arg-type]


def verify(request: HttpRequest, auth: SigV2Query, secret: str, now: float) -> None:
    if now > auth.expires:
        raise AuthError("AccessDenied", "the presigned URL has expired")
    expected = _signature(request, ReadOnlyCredentials(auth.access_key_id, secret, None),
                          auth.expires)  # fmt: skip
    if not hmac.compare_digest(expected, auth.signature):
        raise AuthError(
            "SignatureDoesNotMatch",
            "the request signature does not match the session's credentials",
        )


def resign(request: HttpRequest, auth: SigV2Query, credentials: Any) -> Rewrite:
    signature = _signature(request, credentials, auth.expires)
    params = [f"AWSAccessKeyId={quote(credentials.access_key, safe='')}",
              f"Signature={quote(signature, safe='')}", f"Expires={auth.expires}"]  # fmt: skip
    if credentials.token:
        params.append(f"x-amz-security-token={quote(credentials.token, safe='')}")
    kept = _kept_query(request)
    query = "&".join([kept, *params] if kept else params)
    return Rewrite(path=f"{request.path.partition('?')[0]}?{query}")


__all__ = ["SigV2Query", "is_sigv2_query", "parse", "resign", "verify"]

"""The identity of a request, stable across re-signing and retries.

An approval releases "the same request": the same method, destination, path, query,
body and meaning-bearing headers. Signatures, dates, security tokens and SDK retry
counters change on every attempt and are left out, so an agent's retry of an
approved call matches while any change to what it asks for does not.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlencode

from guardproxy.recognise.request import HttpRequest

# Query parameters of presigned AWS URLs that change with every signing.
_VOLATILE_QUERY = frozenset(
    {"x-amz-signature", "x-amz-date", "x-amz-credential", "x-amz-security-token",
     "x-amz-expires", "x-amz-signedheaders", "signature", "expires", "awsaccesskeyid"}
)  # fmt: skip
# Headers that change what the upstream does.
_MEANINGFUL_HEADERS = frozenset(
    {"content-type", "content-encoding", "x-amz-target", "x-http-method-override",
     "x-http-method", "if-match", "if-none-match", "upgrade"}
)  # fmt: skip
# x-amz-* headers that change with every attempt rather than with the request.
_VOLATILE_AMZ = frozenset(
    {"x-amz-date", "x-amz-security-token", "x-amz-user-agent", "x-amz-content-sha256",
     "x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-sha1",
     "x-amz-checksum-sha256", "x-amz-sdk-checksum-algorithm"}
)  # fmt: skip


def _meaningful(name: str) -> bool:
    if name in _MEANINGFUL_HEADERS:
        return True
    return name.startswith("x-amz-") and name not in _VOLATILE_AMZ and "sdk" not in name


def request_digest(request: HttpRequest) -> str:
    """sha256 over the canonical request; equal for retries of the same call."""
    query = sorted((k, v) for k, v in request.query if k.lower() not in _VOLATILE_QUERY)
    headers = sorted((k, v.strip()) for k, v in request.headers if _meaningful(k))
    canonical = "\n".join(
        [
            request.method.upper(),
            request.scheme.lower(),
            f"{request.host.lower()}:{request.port}",
            request.path_only,
            urlencode(query),
            "\n".join(f"{k}:{v}" for k, v in headers),
            hashlib.sha256(request.body).hexdigest(),
        ]
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

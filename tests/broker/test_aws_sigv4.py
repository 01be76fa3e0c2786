"""SigV4 verify and re-sign (guardproxy/broker/aws_sigv4.py), on requests signed by botocore
itself in every form the SDKs send, checked by an independent verifier (the fake AWS of
tests/e2e/aws_verify.py: botocore computes the expected signature from the real secret).

What must hold: a request signed by the session verifies, any change to it does not; the
re-signed request is accepted by AWS with the real key and differs from the approved
one in its authentication only.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from e2e.aws_verify import KeyRing, RealKey, check

from guardproxy.broker import AuthError, Rewrite, aws_chunked, aws_sigv4
from guardproxy.recognise.request import HttpRequest

SESSION = Credentials("GPAKSESSIONKEY000001", "session+secret/0123456789abcdefghijklmnopq")
REAL = ReadOnlyCredentials(
    "AKIAREALKEY000000001", "REALsecretREALsecretREALsecretREALsecret", "REAL-session-token"
)
REAL_NO_TOKEN = ReadOnlyCredentials(
    "AKIAREALKEY000000002", "REALsecret2REALsecret2REALsecret2REALsec", None
)


def ring() -> KeyRing:
    keys = KeyRing()
    for real in (REAL, REAL_NO_TOKEN):
        assert real.access_key is not None and real.secret_key is not None
        keys.add(RealKey(real.access_key, real.secret_key, real.token))
    return keys


def to_request(aws: AWSRequest, *, http2: bool = False) -> HttpRequest:
    """What mitmproxy hands the broker for the request botocore prepared."""
    prepared = aws.prepare()
    url = urlsplit(prepared.url)
    target = url.path + (f"?{url.query}" if url.query else "")
    headers = [(k.lower(), v) for k, v in prepared.headers.items()]
    if not http2 and not any(k == "host" for k, _ in headers):
        headers.insert(0, ("host", url.netloc))
    given = prepared.body or b""
    body = given.encode() if isinstance(given, str) else bytes(given)  # type: ignore[arg-type]
    return HttpRequest(
        method=prepared.method, scheme=url.scheme, host=url.hostname or "",
        port=url.port or (443 if url.scheme == "https" else 80), path=target,
        headers=tuple(headers), body=body, host_header=url.netloc,
    )  # fmt: skip


def applied(request: HttpRequest, rewrite: Rewrite) -> HttpRequest:
    """``request`` with ``rewrite`` applied as BrokerSign applies it to the flow."""
    removed = {n.lower() for n in rewrite.remove_headers} | {
        n.lower() for n, _ in rewrite.set_headers
    }
    headers = [(k, v) for k, v in request.headers if k not in removed]
    headers += [(n.lower(), v) for n, v in rewrite.set_headers]
    return HttpRequest(
        method=request.method, scheme=request.scheme, host=request.host, port=request.port,
        path=rewrite.path if rewrite.path is not None else request.path,
        headers=tuple(headers),
        body=rewrite.body if rewrite.body is not None else request.body,
        host_header=request.host_header,
    )  # fmt: skip


def aws_accepts(request: HttpRequest) -> str:
    verdict = check(ring(), request.method, request.path, list(request.headers), request.body,
                    scheme=request.scheme)  # fmt: skip
    return "ok" if verdict.ok else verdict.code


def now() -> datetime:
    return datetime.now(UTC)


def header_signed(
    method: str,
    url: str,
    service: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    s3: bool = False,
) -> HttpRequest:
    aws = AWSRequest(method, url, data=body, headers=headers or {})
    signer = S3SigV4Auth if s3 else SigV4Auth
    signer(SESSION, service, "eu-west-1").add_auth(aws)
    return to_request(aws)


def presigned(method: str, url: str, service: str, *, s3: bool = False) -> HttpRequest:
    aws = AWSRequest(method, url)
    signer = S3SigV4QueryAuth if s3 else SigV4QueryAuth
    signer(SESSION, service, "eu-west-1", expires=600).add_auth(aws)
    return to_request(aws)


FORMS = {
    "query protocol": lambda: header_signed(
        "POST",
        "https://cloudformation.eu-west-1.amazonaws.com/",
        "cloudformation",
        body=b"Action=DeleteStack&StackName=prod-calc&Version=2010-05-15",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    ),
    "json protocol": lambda: header_signed(
        "POST",
        "https://dynamodb.eu-west-1.amazonaws.com/",
        "dynamodb",
        body=b'{"TableName":"prod"}',
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.DeleteTable",
        },
    ),
    "rest-json, path with spaces and dot segments": lambda: header_signed(
        "DELETE",
        "https://lambda.eu-west-1.amazonaws.com/2015-03-31/functions/a%20b/./x/..//y",
        "lambda",
    ),
    "different signing name": lambda: header_signed(
        "POST",
        "https://email.eu-west-1.amazonaws.com/",
        "ses",
        body=b"Action=DeleteIdentity&Identity=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    "repeated and unsorted query": lambda: header_signed(
        "GET",
        "https://ec2.eu-west-1.amazonaws.com/?b=2&a=1&a=0&Filter.1.Name=tag%3AName",
        "ec2",
    ),
    "s3 signed payload": lambda: header_signed(
        "PUT",
        "https://bucket.s3.eu-west-1.amazonaws.com/key%20with%20spaces//x",
        "s3",
        body=b"hello world",
        s3=True,
    ),
    "s3 unsigned payload": lambda: header_signed(
        "PUT",
        "https://bucket.s3.eu-west-1.amazonaws.com/k",
        "s3",
        body=b"data",
        headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
        s3=True,
    ),
    "s3 presigned": lambda: presigned(
        "GET", "https://bucket.s3.eu-west-1.amazonaws.com/k?versionId=3", "s3", s3=True
    ),
    "sts presigned": lambda: presigned(
        "GET",
        "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15",
        "sts",
    ),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_a_session_signed_request_verifies_and_its_resigned_form_is_accepted(form: str) -> None:
    request = FORMS[form]()
    assert aws_accepts(request) == "InvalidAccessKeyId"  # the session key means nothing to AWS
    auth = aws_sigv4.parse(request)
    aws_sigv4.verify(request, auth, SESSION.secret_key, now())
    for real in (REAL, REAL_NO_TOKEN):
        rewrite = aws_sigv4.resign(request, auth, real)
        resigned = applied(request, rewrite)
        assert aws_accepts(resigned) == "ok", form
        assert_only_auth_changed(request, resigned)


def assert_only_auth_changed(before: HttpRequest, after: HttpRequest) -> None:
    auth_headers = {"authorization", "x-amz-date", "x-amz-security-token"}
    assert before.method == after.method and before.body == after.body
    assert before.path_only == after.path_only
    assert [(k, v) for k, v in before.headers if k not in auth_headers] == [
        (k, v) for k, v in after.headers if k not in auth_headers
    ]
    query_auth = {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                  "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token"}  # fmt: skip

    def operation(request: HttpRequest) -> list[str]:
        query = request.path.partition("?")[2]
        return [p for p in query.split("&") if p and p.partition("=")[0] not in query_auth]

    assert operation(before) == operation(after)  # same parameters, same bytes, same order


TAMPERING = {
    "body": lambda r: _replace(r, body=r.body + b"&Force=true"),
    "path": lambda r: _replace(r, path="/x" + r.path),
    "query added": lambda r: _replace(r, path=r.path + ("&" if "?" in r.path else "?") + "x=1"),
    "signed header value": lambda r: _replace(
        r, headers=tuple((k, v + "x") if k == "content-type" else (k, v) for k, v in r.headers)
    ),
    "signed header doubled": lambda r: _replace(
        r, headers=(*r.headers, ("content-type", "text/plain"))
    ),
    "method": lambda r: _replace(r, method="PUT"),
    "host header": lambda r: _replace(
        r, headers=tuple((k, "evil.example") if k == "host" else (k, v) for k, v in r.headers)
    ),
}


def _replace(request: HttpRequest, **changes: object) -> HttpRequest:
    values = {f: getattr(request, f) for f in ("method", "scheme", "host", "port", "path",
                                                "headers", "body", "host_header")}  # fmt: skip
    values.update(changes)
    return HttpRequest(**values)


@pytest.mark.parametrize("change", list(TAMPERING))
def test_a_changed_request_does_not_verify(change: str) -> None:
    request = FORMS["query protocol"]()
    tampered = TAMPERING[change](request)
    with pytest.raises(AuthError) as refused:
        aws_sigv4.verify(tampered, aws_sigv4.parse(tampered), SESSION.secret_key, now())
    assert refused.value.code in ("SignatureDoesNotMatch", "InvalidRequest")


def test_a_wrong_secret_does_not_verify() -> None:
    request = FORMS["json protocol"]()
    with pytest.raises(AuthError, match="does not match"):
        aws_sigv4.verify(request, aws_sigv4.parse(request), SESSION.secret_key + "x", now())


def test_a_presigned_query_changed_does_not_verify() -> None:
    request = FORMS["s3 presigned"]()
    tampered = _replace(request, path=request.path.replace("versionId=3", "versionId=4"))
    with pytest.raises(AuthError, match="does not match"):
        aws_sigv4.verify(tampered, aws_sigv4.parse(tampered), SESSION.secret_key, now())


def test_dates_are_checked_as_aws_checks_them() -> None:
    request = FORMS["query protocol"]()
    auth = aws_sigv4.parse(request)
    with pytest.raises(AuthError) as skewed:
        aws_sigv4.verify(request, auth, SESSION.secret_key, now() + timedelta(minutes=16))
    assert skewed.value.code == "RequestTimeTooSkewed"
    aws_sigv4.verify(request, auth, SESSION.secret_key, now() + timedelta(minutes=14))
    url = FORMS["s3 presigned"]()
    with pytest.raises(AuthError, match="expired"):
        aws_sigv4.verify(
            url, aws_sigv4.parse(url), SESSION.secret_key, now() + timedelta(minutes=11)
        )


def test_a_payload_hash_that_is_not_the_body_is_refused() -> None:
    request = FORMS["s3 signed payload"]()
    lie = hashlib.sha256(b"something else").hexdigest()
    tampered = _replace(request, headers=tuple(
        (k, lie) if k == "x-amz-content-sha256" else (k, v) for k, v in request.headers
    ))  # fmt: skip
    with pytest.raises(AuthError) as refused:
        aws_sigv4.verify(tampered, aws_sigv4.parse(tampered), SESSION.secret_key, now())
    assert refused.value.code == "XAmzContentSHA256Mismatch"


MALFORMED = {
    "two authorization headers": lambda r: _replace(
        r, headers=(*r.headers, ("authorization", dict(r.headers)["authorization"]))
    ),
    "header and query auth": lambda r: _replace(
        r, path=r.path + "?X-Amz-Signature=" + "0" * 64
    ),
    "credential field twice": lambda r: _replace(r, headers=tuple(
        (k, v.replace("SignedHeaders=", "Credential=x/y/z/w/aws4_request, SignedHeaders="))
        if k == "authorization" else (k, v) for k, v in r.headers
    )),
    "sigv4a": lambda r: _replace(r, headers=tuple(
        (k, v.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256")) if k == "authorization"
        else (k, v) for k, v in r.headers
    )),
    "no x-amz-date": lambda r: _replace(
        r, headers=tuple((k, v) for k, v in r.headers if k != "x-amz-date")
    ),
    "x-amz-date twice": lambda r: _replace(
        r, headers=(*r.headers, ("x-amz-date", dict(r.headers)["x-amz-date"]))
    ),
}  # fmt: skip


@pytest.mark.parametrize("shape", list(MALFORMED))
def test_a_malformed_or_doubled_authentication_is_refused(shape: str) -> None:
    request = MALFORMED[shape](FORMS["query protocol"]())
    with pytest.raises(AuthError):
        auth = aws_sigv4.parse(request)
        aws_sigv4.verify(request, auth, SESSION.secret_key, now())


def test_the_session_key_is_found_wherever_a_signature_names_it() -> None:
    assert aws_sigv4.session_access_key(FORMS["query protocol"]()) == SESSION.access_key
    assert aws_sigv4.session_access_key(FORMS["s3 presigned"]()) == SESSION.access_key
    real = AWSRequest("GET", "https://ec2.eu-west-1.amazonaws.com/?Action=X")
    SigV4Auth(REAL, "ec2", "eu-west-1").add_auth(real)
    assert aws_sigv4.session_access_key(to_request(real)) is None
    search = _replace(to_request(real), path=f"/search?q={SESSION.access_key}")
    assert aws_sigv4.session_access_key(search) is None  # a mention is no authentication
    sigv2 = _replace(to_request(real), headers=(("authorization", f"AWS {SESSION.access_key}:x"),))
    assert aws_sigv4.session_access_key(sigv2) == SESSION.access_key
    with pytest.raises(AuthError, match="SigV2 Authorization headers are not brokered"):
        aws_sigv4.parse(sigv2)


def test_http2_requests_sign_the_authority() -> None:
    aws = AWSRequest("GET", "https://ec2.eu-west-1.amazonaws.com/?Action=DescribeRegions")
    SigV4Auth(SESSION, "ec2", "eu-west-1").add_auth(aws)
    request = to_request(aws, http2=True)
    assert not request.header("host")
    auth = aws_sigv4.parse(request)
    aws_sigv4.verify(request, auth, SESSION.secret_key, now())
    resigned = applied(request, aws_sigv4.resign(request, auth, REAL))
    with_host = _replace(resigned, headers=(("host", request.host_header), *resigned.headers))
    assert aws_accepts(with_host) == "ok"


# -- aws-chunked ----------------------------------------------------------------------


def chunked_upload(payload: bytes, *, chunk: int, trailer: bool) -> HttpRequest:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] upload as the Java SDK sends it,
    its chunks signed with botocore's SigV4Auth.signature (the seed from the header)."""
    mode = aws_chunked.SIGNED_TRAILER if trailer else aws_chunked.SIGNED
    headers = {"X-Amz-Content-SHA256": mode, "Content-Encoding": "aws-chunked",
               "X-Amz-Decoded-Content-Length": str(len(payload))}  # fmt: skip
    if trailer:
        headers["X-Amz-Trailer"] = "x-amz-checksum-sha256"
    aws = AWSRequest("PUT", "https://bucket.s3.eu-west-1.amazonaws.com/big", headers=headers)
    signer = SigV4Auth(SESSION, "s3", "eu-west-1")
    signer.add_auth(aws)
    seed = aws.headers["Authorization"].rpartition("Signature=")[2]
    stamp = aws.context["timestamp"]
    scope = signer.credential_scope(aws)
    empty = hashlib.sha256(b"").hexdigest()
    wire, previous = bytearray(), seed
    pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)] + [b""]
    for data in pieces:
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", stamp, scope, previous, empty,
                             hashlib.sha256(data).hexdigest()])  # fmt: skip
        previous = signer.signature(to_sign, aws)
        wire += f"{len(data):x};chunk-signature={previous}\r\n".encode() + data
        wire += b"\r\n" if data else b""
    if trailer:
        line = b"x-amz-checksum-sha256:" + hashlib.sha256(payload).hexdigest().encode()
        digest = hashlib.sha256(line + b"\n").hexdigest()
        to_sign = "\n".join(["AWS4-HMAC-SHA256-TRAILER", stamp, scope, previous, digest])
        wire += (
            line
            + b"\r\n"
            + b"x-amz-trailer-signature:"
            + signer.signature(to_sign, aws).encode()
            + b"\r\n"
        )
    wire += b"\r\n"
    aws.data = bytes(wire)
    aws.headers["Content-Length"] = str(len(wire))
    return to_request(aws)


@pytest.mark.parametrize("trailer", [False, True], ids=["payload", "payload-trailer"])
def test_signed_chunks_are_verified_and_signed_again(trailer: bool) -> None:
    payload = bytes(range(256)) * 300
    request = chunked_upload(payload, chunk=8192, trailer=trailer)
    auth = aws_sigv4.parse(request)
    aws_sigv4.verify(request, auth, SESSION.secret_key, now())
    rewrite = aws_sigv4.resign(request, auth, REAL)
    assert rewrite.body is not None and len(rewrite.body) == len(request.body)
    resigned = applied(request, rewrite)
    assert aws_accepts(resigned) == "ok"
    assert aws_accepts(applied(request, Rewrite(
        set_headers=rewrite.set_headers, remove_headers=rewrite.remove_headers
    ))) == "SignatureDoesNotMatch"  # the header alone re-signed: the old chunks fail  # fmt: skip


def test_a_changed_chunk_does_not_verify() -> None:
    request = chunked_upload(b"a" * 20000, chunk=8192, trailer=False)
    body = bytearray(request.body)
    body[body.index(b"aaaa") + 10] = ord("b")
    tampered = _replace(request, body=bytes(body))
    with pytest.raises(AuthError, match="chunk signature"):
        aws_sigv4.verify(tampered, aws_sigv4.parse(tampered), SESSION.secret_key, now())


@pytest.mark.parametrize(
    "cut", [b"\r\n\r\n", b";chunk-signature=", b"0;chunk"], ids=["end", "signature", "last"]
)
def test_a_malformed_chunked_body_is_refused(cut: bytes) -> None:
    request = chunked_upload(b"x" * 100, chunk=64, trailer=False)
    body = request.body
    index = body.rfind(cut)
    tampered = _replace(request, body=body[:index] + body[index + 1 :])
    with pytest.raises(AuthError):
        aws_sigv4.verify(tampered, aws_sigv4.parse(tampered), SESSION.secret_key, now())

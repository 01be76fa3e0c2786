"""A request's identity survives re-signing and retries, and nothing else."""

from __future__ import annotations

from guardproxy.gate.digest import request_digest
from guardproxy.recognise.request import HttpRequest

BODY = b"Action=DeleteStack&StackName=prod-calc&Version=2010-05-15"


def _signed(date: str, signature: str, attempt: int, body: bytes = BODY) -> HttpRequest:
    return HttpRequest(
        "POST",
        "https",
        "cloudformation.us-east-1.amazonaws.com",
        443,
        "/",
        (
            ("content-type", "application/x-www-form-urlencoded; charset=utf-8"),
            ("x-amz-date", date),
            ("authorization", f"AWS4-HMAC-SHA256 Credential=AKID/x, Signature={signature}"),
            ("amz-sdk-invocation-id", f"inv-{attempt}"),
            ("amz-sdk-request", f"attempt={attempt}; max=5"),
            ("user-agent", "aws-cli/1.45"),
            ("x-amz-security-token", f"token-{attempt}"),
        ),
        body,
    )


def test_resigned_retries_have_the_same_identity() -> None:
    first = _signed("20261125T120000Z", "aaa", 1)
    retry = _signed("20261125T120500Z", "bbb", 2)
    assert request_digest(first) == request_digest(retry)


def test_a_different_stack_is_a_different_request() -> None:
    other = _signed("20261125T120000Z", "aaa", 1, BODY.replace(b"prod-calc", b"prod-api"))
    assert request_digest(other) != request_digest(_signed("20261125T120000Z", "aaa", 1))


def test_presigned_url_signatures_are_ignored_but_parameters_are_not() -> None:
    def url(signature: str, key: str) -> HttpRequest:
        return HttpRequest(
            "DELETE", "https", "bucket.s3.amazonaws.com", 443,
            f"/{key}?versionId=3&X-Amz-Signature={signature}&X-Amz-Date=2026",
        )  # fmt: skip

    assert request_digest(url("a", "k")) == request_digest(url("b", "k"))
    assert request_digest(url("a", "k")) != request_digest(url("a", "other"))


def test_method_destination_and_meaningful_headers_count() -> None:
    base = HttpRequest("DELETE", "https", "k8s.example", 6443, "/api/v1/namespaces/prod")
    assert request_digest(base) != request_digest(
        HttpRequest("GET", "https", "k8s.example", 6443, "/api/v1/namespaces/prod")
    )
    assert request_digest(base) != request_digest(
        HttpRequest("DELETE", "https", "k8s.example", 443, "/api/v1/namespaces/prod")
    )
    target = HttpRequest("POST", "https", "h", 443, "/", (("x-amz-target", "A.DeleteTable"),))
    other = HttpRequest("POST", "https", "h", 443, "/", (("x-amz-target", "A.DescribeTable"),))
    assert request_digest(target) != request_digest(other)


def _get(path: str) -> HttpRequest:
    return HttpRequest("DELETE", "https", "k8s.internal", 6443, path, (), b"")


def test_a_double_slash_path_is_a_path_not_a_host() -> None:
    # urlsplit would read "//a/x" as host "a", path "/x": "//a/x" and "//b/x" would share
    # a digest, and an approval of one would release the other.
    assert request_digest(_get("//a/x")) != request_digest(_get("//b/x"))
    assert request_digest(_get("//[")) != request_digest(_get("//]"))

"""Denials and holds are answered in each API's own error format, never retryably."""

from __future__ import annotations

import json

import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.parsers import create_parser
from botocore.retries import standard

from guardproxy.action import Action
from guardproxy.gate.responses import NativeAnswer, native_answer
from guardproxy.recognise.request import HttpRequest

MESSAGE = "guardproxy: held for human approval (hold h-abc). Do not retry it in another form."
# botocore retries these (retryhandler / standard retry mode): never answer with them
RETRYABLE_STATUS = {429, 500, 502, 503, 504, 509}


def _request(content_type: str = "", target: str = "", method: str = "POST") -> HttpRequest:
    headers = [("content-type", content_type)] if content_type else []
    if target:
        headers.append(("x-amz-target", target))
    return HttpRequest(method, "https", "example.amazonaws.com", 443, "/", tuple(headers))


def _aws_error(answer: NativeAnswer, service: str, operation: str) -> dict[str, str]:
    """What botocore itself makes of our answer."""
    model = botocore.session.get_session().get_service_model(service)
    response = {
        "status_code": answer.status,
        # HTTP headers are case-insensitive; botocore looks them up in lower case
        "headers": {name.lower(): value for name, value in answer.headers},
        "body": answer.body,
    }
    parser = create_parser(model.metadata["protocol"])
    # operations without output have no shape; botocore parses errors all the same
    output = model.operation_model(operation).output_shape
    parsed = parser.parse(response, output)  # type: ignore[arg-type]
    error: dict[str, str] = parsed["Error"]
    return error


@pytest.mark.parametrize(
    ("service", "operation", "request_", "code"),
    [
        ("cloudformation", "DeleteStack", _request("application/x-www-form-urlencoded"),
         "AccessDenied"),
        ("ec2", "TerminateInstances", _request("application/x-www-form-urlencoded"),
         "UnauthorizedOperation"),
        ("dynamodb", "DeleteTable",
         _request("application/x-amz-json-1.0", "DynamoDB_20120810.DeleteTable"),
         "AccessDeniedException"),
        ("s3", "DeleteBucket", _request(method="DELETE"), "AccessDenied"),
        ("lambda", "DeleteFunction", _request(method="DELETE"), "AccessDeniedException"),
    ],
)  # fmt: skip
def test_botocore_reads_our_message_and_code(
    service: str, operation: str, request_: HttpRequest, code: str
) -> None:
    action = Action(provider="aws", service=service, operation=operation, verb="destroy")
    answer = native_answer(request_, action, MESSAGE, decision="hold", reference="h-abc")
    assert answer.status == 403
    assert answer.status not in RETRYABLE_STATUS
    error = _aws_error(answer, service, operation)
    assert error["Code"] == code
    assert error["Message"] == MESSAGE
    headers = dict(answer.headers)
    assert headers["X-Guardproxy-Decision"] == "hold"
    assert headers["X-Guardproxy-Id"] == "h-abc"


def test_botocore_does_not_retry_it() -> None:
    """botocore's standard retry mode classifies our answer as not retryable."""
    action = Action(provider="aws", service="cloudformation", operation="DeleteStack")
    answer = native_answer(
        _request("application/x-www-form-urlencoded"), action, MESSAGE,
        decision="deny", reference="d-1",
    )  # fmt: skip
    error = _aws_error(answer, "cloudformation", "DeleteStack")
    headers = HTTPHeaders()
    for name, value in answer.headers:
        headers[name] = value
    http_response = AWSResponse("https://x", answer.status, headers, None)
    model = botocore.session.get_session().get_service_model("cloudformation")
    context = standard.RetryContext(
        attempt_number=1,
        operation_model=model.operation_model("DeleteStack"),
        parsed_response={"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}},
        http_response=http_response,
        caught_exception=None,
    )
    checker = standard.StandardRetryConditions()
    assert not checker.is_retryable(context)


def test_kubernetes_status_is_a_forbidden_status() -> None:
    action = Action(provider="k8s", service="core", operation="delete",
                    resource={"type": "k8s:core:namespaces", "name": "prod"})  # fmt: skip
    request = HttpRequest("DELETE", "https", "127.0.0.1", 6443, "/api/v1/namespaces/prod")
    answer = native_answer(request, action, MESSAGE, decision="deny", reference="d-1")
    status = json.loads(answer.body)
    assert answer.status == 403
    assert status["kind"] == "Status"
    assert status["reason"] == "Forbidden"
    assert status["code"] == 403
    assert status["message"] == MESSAGE
    assert status["details"] == {"name": "prod", "kind": "namespaces"}


@pytest.mark.parametrize(
    ("provider", "path"),
    [("github", ("message",)), ("gcp", ("error", "message")), ("azure", ("error", "message")),
     ("tfc", ("errors", 0, "detail")), ("docker", ("message",)), ("unknown", ("message",))],
)  # fmt: skip
def test_json_apis_carry_the_message(provider: str, path: tuple[str | int, ...]) -> None:
    action = Action(provider=provider)
    request = HttpRequest("DELETE", "https", "api.example.com", 443, "/x")
    answer = native_answer(request, action, MESSAGE, decision="deny", reference="d-1")
    value: object = json.loads(answer.body)
    for key in path:
        value = value[key]  # type: ignore[index]
    assert value == MESSAGE
    assert answer.status == 403

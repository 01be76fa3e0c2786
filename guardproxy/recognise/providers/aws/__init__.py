"""Amazon Web Services: the AWS provider module (see ``recognise/registry.py``).

Claims: a SigV4 ``Authorization`` header, whatever the host (an emulator on loopback
too); a presigned URL's ``X-Amz-Credential``; an AWS endpoint host. Unclaimed, an
``X-Amz-Target``, Smithy RPC-v2 CBOR path or ``Action=`` call is still read as AWS (an
emulator reached without a signature). The recogniser (``recogniser.py``) reads every
way a server may read the request, from botocore's models (``index.py``); the
operations a data-plane call carries in its payload (SQL through the RDS Data, Redshift
Data and Athena APIs, DynamoDB batch deletes and PartiQL) are further readings
(``payload.py``, with the SQL provider's readers).

Selectors: ``aws:account:<id>``; names: the resource (an S3 object's bucket, never its
key). Containers: CloudFormation
stacks. Responses name EC2 instances (``responses.py``).
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

from guardproxy.action import Action, Provider
from guardproxy.recognise.providers.aws import catalogue
from guardproxy.recognise.providers.aws.index import shared_index
from guardproxy.recognise.providers.aws.recogniser import recognise_aws
from guardproxy.recognise.providers.aws.responses import EC2_INSTANCES
from guardproxy.recognise.providers.aws.wire import header_scopes, is_aws_host, query_scopes
from guardproxy.recognise.registry import (
    Claim,
    Containers,
    Fallback,
    NativeError,
    ProviderModule,
    Selectors,
    Spelling,
    json_error,
)
from guardproxy.recognise.request import HttpRequest, RecogniseSettings

__all__ = ["PROVIDER"]

_CBOR_CALL = re.compile(r"^/service/[^/]+/operation/[^/]+$")
_REST_XML = frozenset({"s3", "s3control", "route53", "cloudfront"})
"""Services whose REST protocol speaks XML (the rest speak JSON)."""
_STACK = "aws:cloudformation:stack"


def _recognise(request: HttpRequest) -> Action:
    return recognise_aws(request, shared_index())


def _signed(request: HttpRequest, settings: RecogniseSettings) -> bool:
    return bool(header_scopes(request))


def _signed_reason(request: HttpRequest) -> str:
    scope = header_scopes(request)[0]
    return f"it is SigV4-signed for {scope.service} in {scope.region or '(no region)'}"


def _presigned(request: HttpRequest, settings: RecogniseSettings) -> bool:
    return bool(query_scopes(request))


def _presigned_reason(request: HttpRequest) -> str:
    scope = query_scopes(request)[0]
    where = f"{scope.service} in {scope.region or '(no region)'}"
    return f"its query carries a SigV4 credential for {where} (a presigned URL)"


def _aws_host(request: HttpRequest, settings: RecogniseSettings) -> bool:
    return is_aws_host(request.host)


def _aws_host_reason(request: HttpRequest) -> str:
    return f"{request.host} is an AWS endpoint"


def _warm_up() -> None:
    shared_index()


def _names_a_call(request: HttpRequest) -> bool:
    """An AWS call named without a signature: ``X-Amz-Target``, a Smithy RPC-v2 CBOR path
    or an ``Action=`` field in the query or the body."""
    return bool(
        request.header("x-amz-target")
        or _CBOR_CALL.match(request.path_only)
        or "ction=" in request.path
        or b"ction=" in request.body
    )


def _error(request: HttpRequest, action: Action, message: str, reference: str) -> NativeError:
    """The error each AWS protocol's SDK parses: JSON with ``__type`` for the JSON
    protocols, the query protocol's XML (EC2's own shape), REST-XML or REST-JSON."""
    content_type = request.header("content-type")
    if request.header("x-amz-target") or content_type.startswith("application/x-amz-json"):
        body = {"__type": "AccessDeniedException", "message": message, "Message": message}
        return json_error(content_type or "application/x-amz-json-1.1", body)
    text = escape(message)
    if content_type.startswith("application/x-www-form-urlencoded"):
        if action.service == "ec2":
            xml = (
                "<Response><Errors><Error><Code>UnauthorizedOperation</Code>"
                f"<Message>{text}</Message></Error></Errors>"
                f"<RequestID>{escape(reference)}</RequestID></Response>"
            )
        else:
            xml = (
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
                f"<Message>{text}</Message></Error>"
                f"<RequestId>{escape(reference)}</RequestId></ErrorResponse>"
            )
        return NativeError("text/xml", xml.encode())
    if action.service in _REST_XML:
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
            f"<Message>{text}</Message><RequestId>{escape(reference)}</RequestId></Error>"
        )
        return NativeError("application/xml", xml.encode())
    return json_error(
        "application/json",
        {"message": message, "Message": message},
        ("x-amzn-ErrorType", "AccessDeniedException"),
    )


def _selectors(action: Action, spell: Spelling) -> list[str]:
    return [f"aws:account:{action.scope.account}"] if action.scope.account else []


def _names(action: Action) -> list[str]:
    name = action.resource.name or action.resource.id
    if action.resource.type == "aws:s3:object":
        name = name.split("/", 1)[0]  # the bucket: a key names a path, not an environment
    return [name, action.scope.namespace]


def _destroyed(action: Action) -> str:
    return action.resource.key if action.resource.type.lower() == _STACK else ""


PROVIDER = ProviderModule(
    provider=Provider.AWS,
    recognise=_recognise,
    claims=(
        Claim(20, "sigv4", _signed, _signed_reason),
        Claim(90, "presigned", _presigned, _presigned_reason),
        Claim(100, "aws-host", _aws_host, _aws_host_reason),
    ),
    fallback=Fallback(30, _names_a_call),
    error=_error,
    selectors=Selectors(_selectors, names=_names),
    containers=Containers(destroyed=_destroyed),
    names=(EC2_INSTANCES,),
    destructive=catalogue.destructive,
    warm_up=_warm_up,
)

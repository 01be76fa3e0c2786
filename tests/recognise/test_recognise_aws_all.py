"""Every operation of every service in botocore maps back to itself (issue 4's sweep).

For each service botocore ships, a boto3 client with its *real* AWS endpoint
(``endpoint_url=None``, us-east-1) builds and signs one request per operation from the
required members of its input shape; the ``before-send`` hook captures it and nothing
is sent. ``recognise()`` then sees only the wire request. A result counts as correct
when it is exact (same service and operation), or a wire-identical sibling:

* a *sibling model*: another botocore model with the same signing name whose
  operation of the same name has the same HTTP method and request URI (``docdb`` and
  ``neptune`` calls are literally RDS API calls; ``greengrass``/``greengrassv2``,
  ``wisdom``/``qconnect``), so nothing on the wire can tell them apart;
* a *deprecated alias* inside the same model with the same HTTP binding (S3's
  ``GetBucketLifecycle`` ≡ ``GetBucketLifecycleConfiguration`` and friends), the rule
  ``test_recognise_aws_sweep._wire_twin`` already uses.

Operations the parameter generator cannot build (event-stream operations without a
client method, SDK-side validation or endpoint-rule errors on placeholder values,
bearer-token services without a token, SigV4a without ``awscrt``, and Timestream,
whose endpoint-discovery prefetch gets the fake empty answer so the operation itself
is never sent) are skipped and counted separately. The whole sweep is
~20,000 requests and takes about 2.5 minutes on two cores, so nothing is sampled.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from functools import cache
from typing import Any

import botocore.session
import pytest
from botocore.model import OperationModel, ServiceModel
from recognise_support import Capture, minimal_params

from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.providers.aws.index import AwsIndex
from guardproxy.recognise.request import HttpRequest

THRESHOLD = 0.999


@cache
def _session() -> Any:
    return botocore.session.get_session()


@cache
def _model(service: str) -> ServiceModel | None:
    """A fresh model (S3's client customisations rewrite request URIs in place)."""
    try:
        model: ServiceModel = _session().get_service_model(service)
    except Exception:
        return None
    return model


def _signing_name(model: ServiceModel) -> str:
    return str(model.metadata.get("signingName") or model.metadata.get("endpointPrefix") or "")


_LABEL = re.compile(r"\{[^}+]*(\+?)\}")


def _http(operation: OperationModel) -> tuple[str, str]:
    """Method and request URI, label names erased (``{ThingName}`` ≡ ``{thingName}``)."""
    http = operation.http
    uri = _LABEL.sub(r"{\1}", str(http.get("requestUri", "/")))
    return str(http.get("method", "POST")), uri


def _discovery_prefetch(request: HttpRequest, operation: str) -> bool:
    """The endpoint-discovery call botocore makes before the operation itself
    (Timestream): the fake empty answer ends the call there, so the operation's own
    request is never built."""
    target = request.header("x-amz-target") or ""
    return operation != "DescribeEndpoints" and target.endswith(".DescribeEndpoints")


def _wire_identical(service: str, operation: str, got_service: str, got_operation: str) -> str:
    """Why (service, operation) recognised as (got_service, got_operation) is still
    right, or "" when it is a miss."""
    expected = _model(service)
    got = _model(got_service) if got_service else None
    if expected is None or got is None or got_operation not in got.operation_names:
        return ""
    old, new = expected.operation_model(operation), got.operation_model(got_operation)
    if _http(old) != _http(new) or _signing_name(expected) != _signing_name(got):
        return ""
    if got_service != service and got_operation == operation:
        return "sibling"
    if got_service == service and old.deprecated:
        return "alias"
    return ""


def _sweep(index: AwsIndex) -> tuple[Counter[str], list[str], Counter[str]]:
    counts: Counter[str] = Counter()
    unbuilt: Counter[str] = Counter()
    misses: list[str] = []
    settings = RecogniseSettings()
    for service in _session().get_available_services():
        try:
            client = Capture(service, endpoint_url=None)
        except Exception as error:  # e.g. a model needing a region-specific partition
            unbuilt[f"client: {type(error).__name__}"] += 1
            continue
        model = client.service_model
        for operation in model.operation_names:
            try:
                request = client.call(operation, minimal_params(model.operation_model(operation)))
            except Exception as error:
                unbuilt[type(error).__name__] += 1
                continue
            if _discovery_prefetch(request, operation):
                unbuilt["endpoint discovery"] += 1
                continue
            action = recognise(request, settings)
            got_service, got_operation = action.service or "", action.operation or ""
            if got_service == service and got_operation == operation:
                counts["exact"] += 1
                continue
            why = _wire_identical(service, operation, got_service, got_operation)
            if why:
                counts[why] += 1
            else:
                counts["miss"] += 1
                misses.append(
                    f"{service}:{operation} -> {got_service}:{got_operation} "
                    f"({action.confidence}) {request.method} {request.host}{request.path[:80]}"
                )
        del client
    return counts, misses, unbuilt


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_operation_of_every_service(aws_index: AwsIndex) -> None:
    started = time.monotonic()
    counts, misses, unbuilt = _sweep(aws_index)
    built = sum(counts.values())
    correct = built - counts["miss"]
    elapsed = time.monotonic() - started
    report = (
        f"{correct}/{built} correct ({correct / max(built, 1):.4%}) in {elapsed:.0f}s: "
        f"{dict(counts)}; not built: {sum(unbuilt.values())} {dict(unbuilt)}\nmisses:\n"
        + "\n".join(misses)
    )
    print(report)
    assert built > 15_000, report
    assert correct / built >= THRESHOLD, report

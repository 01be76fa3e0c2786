"""Properties of the AWS recogniser over requests botocore itself builds.

Operations are drawn from botocore's models for one service per protocol (awsQuery,
EC2, awsJson, RPC v2 CBOR, rest-json, rest-xml), with parameters drawn from their
input shapes, and serialised and signed by boto3 (the ``before-send`` capture of
``recognise_support``: botocore's own serialisers, nothing hand-written).

1. Round trip: the parameters the recogniser reads off the wire, typed back by the
   input shape and serialised again by botocore, give the same action. What the
   recogniser reads is what botocore wrote.
2. Ambiguity: the identifying member given a second, different value (the key
   repeated, or spelled as a lenient server might read it, or a URI member repeated
   in the query string) makes the action ambiguous, and the other value is one of its
   readings (or a reading is unknown): never the harmless reading alone.

The CI slice runs a few dozen examples per property (a few seconds);
``GUARDPROXY_HYPOTHESIS_EXAMPLES=2000`` runs a longer search.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from dataclasses import replace
from functools import cache
from typing import Any
from urllib.parse import quote

from botocore.model import ListShape, MapShape, OperationModel, Shape, StructureShape
from botocore.utils import parse_timestamp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from recognise_support import ACCOUNT, capture, value_for
from test_recognise_aws_sweep import _wire_twin

from guardproxy.action import Action, Confidence, Verb
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.aws import read_request
from guardproxy.recognise.aws_index import AwsIndex, load_index
from guardproxy.recognise.aws_match import Match
from guardproxy.recognise.request import HttpRequest

EXAMPLES = int(os.environ.get("GUARDPROXY_HYPOTHESIS_EXAMPLES", "40"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 40,  # the CI slice is the same every run
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)

SERVICES = (
    "cloudformation",  # query
    "ec2",  # ec2
    "dynamodb",  # json 1.0
    "secretsmanager",  # json 1.1
    "cloudwatch",  # smithy-rpc-v2-cbor (botocore's first choice)
    "lambda",  # rest-json
    "eks",  # rest-json
    "s3",  # rest-xml
    "route53",  # rest-xml
)
NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=3, max_size=16)


@cache
def index() -> AwsIndex:
    """The model index, outside the test's arguments (Hypothesis would print it)."""
    return load_index()


@cache
def operations(service: str) -> tuple[str, ...]:
    """Operations with a plain input (no streaming payload, no event stream)."""
    model = capture(service).service_model
    names = []
    for name in model.operation_names:
        operation: OperationModel = model.operation_model(name)
        shape = operation.input_shape
        if shape is None or operation.has_event_stream_input or operation.has_streaming_input:
            continue
        names.append(name)
    return tuple(names)


def scalars(shape: Shape, member: str) -> st.SearchStrategy[Any]:
    kind = shape.type_name
    if kind == "string":
        enum: list[str] = getattr(shape, "enum", []) or []
        if enum:
            return st.sampled_from(enum)
        lowered = member.lower()
        if "account" in lowered and "id" in lowered:
            return st.just(ACCOUNT)
        if lowered.endswith("url"):
            return NAME.map(lambda n: f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{n}")
        low = int(shape.metadata.get("min", 1))
        return NAME.map(lambda n: n + "x" * max(0, low - len(n)))
    if kind in ("integer", "long"):
        low = int(shape.metadata.get("min", 0))
        return st.integers(min_value=low, max_value=low + 50)
    if kind == "boolean":
        return st.booleans()
    if kind in ("float", "double"):
        return st.sampled_from([1.0, 2.5])
    if kind == "timestamp":
        return st.just(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    if kind == "blob":
        return st.binary(min_size=1, max_size=8)
    return st.just(value_for(shape, member))


@st.composite
def inputs(draw: st.DrawFn, shape: StructureShape) -> dict[str, Any]:
    """Required members (valid, placeholder-style) plus up to three optional scalars."""
    params = value_for(shape)
    assert isinstance(params, dict)
    for member in list(params):
        if shape.members[member].type_name not in ("structure", "list", "map"):
            params[member] = draw(scalars(shape.members[member], member))
    optional = [
        m
        for m, s in shape.members.items()
        if m not in params
        and s.type_name not in ("structure", "list", "map", "blob")
        and not s.serialization.get("hostLabel")
        and s.serialization.get("location") != "headers"
    ]
    for member in (
        draw(st.lists(st.sampled_from(optional), max_size=3, unique=True)) if optional else []
    ):
        params[member] = draw(scalars(shape.members[member], member))
    return params


def _empty_inside(value: Any, depth: int = 0) -> bool:
    """An empty structure or list below the top level: botocore writes nothing for it,
    so no reading of the wire can give it back."""
    if isinstance(value, dict):
        if depth and not value:
            return True
        return any(_empty_inside(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return not value or any(_empty_inside(v, depth + 1) for v in value)
    return False


@st.composite
def botocore_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, Any], HttpRequest]:
    service = draw(st.sampled_from(SERVICES))
    operation = draw(st.sampled_from(operations(service)))
    client = capture(service)
    shape = client.service_model.operation_model(operation).input_shape
    params = draw(inputs(shape))
    assume(not _empty_inside(params))
    try:
        request = client.call(operation, params)
    except Exception:
        assume(False)  # botocore refused the drawn parameters (validation, endpoint rules)
        raise
    return service, operation, params, request


# --------------------------------------------------------------------------- typing back


def typed(shape: Shape, value: Any) -> Any:
    """A value read off the wire, typed by ``shape`` as botocore's serialiser wants it."""
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(shape, StructureShape)
        if value == "":  # an empty XML element
            value = {}
        if not isinstance(value, dict):
            return value
        wire = {m.serialization.get("name", name): name for name, m in shape.members.items()}
        out = {}
        for key, item in value.items():
            name = key if key in shape.members else wire.get(key)
            if name is not None:
                out[name] = typed(shape.members[name], item)
        for name in shape.required_members:  # an empty structure leaves nothing on the wire
            if name not in out and shape.members[name].type_name == "structure":
                out[name] = {}
        return out
    if kind == "list":
        assert isinstance(shape, ListShape)
        items = value
        flattened = shape.serialization.get("flattened")
        if isinstance(value, dict) and len(value) == 1 and not flattened:  # an XML wrapper
            items = next(iter(value.values()))
        if not isinstance(items, list):
            items = [items]
        return [typed(shape.member, item) for item in items]
    if kind == "map":
        assert isinstance(shape, MapShape)
        return {k: typed(shape.value, v) for k, v in value.items()}
    if kind == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind in ("integer", "long"):
        return int(value)
    if kind in ("float", "double"):
        return float(value)
    if kind == "timestamp":
        return value if isinstance(value, dt.datetime) else parse_timestamp(value)
    if kind == "blob":
        return value if isinstance(value, bytes) else base64.b64decode(value)
    return value


def same(first: Action, second: Action) -> dict[str, Any]:
    """The fields that make two actions the same judgement."""

    def fields(action: Action) -> dict[str, Any]:
        return action.model_dump(
            include={"provider", "service", "operation", "verb", "resource", "scope",
                     "risk_tags", "confidence", "dry_run", "truncated"}
        )  # fmt: skip

    return {"first": fields(first), "second": fields(second)}


@PROPERTY
@given(drawn=botocore_requests())
def test_what_is_read_is_what_botocore_wrote(
    drawn: tuple[str, str, dict[str, Any], HttpRequest],
) -> None:
    service, operation, params, request = drawn
    aws_index = index()
    action = recognise(request, RecogniseSettings(), aws_index=aws_index)
    if action.operation != operation and _wire_twin(service, operation, action.operation):
        assume(False)  # S3's deprecated aliases: the same bytes on the wire
    assert (action.service, action.operation) == (service, operation)
    assert action.confidence is Confidence.EXACT, action.risk_tags
    assert not action.readings

    readings = read_request(request, aws_index).readings
    assert len(readings) == 1 and isinstance(readings[0].found, Match)
    read = readings[0].params or {}
    client = capture(service)
    shape = client.service_model.operation_model(operation).input_shape
    again_params = typed(shape, read)
    payload = shape.serialization.get("payload")
    if payload and shape.members[payload].type_name in ("blob", "string"):
        # an opaque payload (a policy document, object data) is data, not parameters:
        # the recogniser does not decode it, so it is handed back as it was
        again_params[payload] = params[payload]
    again = client.call(operation, again_params)
    second = recognise(again, RecogniseSettings(), aws_index=aws_index)
    compared = same(action, second)
    assert compared["first"] == compared["second"]


# --------------------------------------------------------------------------- ambiguity


def _quote(text: str) -> str:
    return quote(text, safe="")


def _with_query(request: HttpRequest, key: str, value: str) -> HttpRequest:
    joiner = "&" if "?" in request.path else "?"
    return replace(request, path=f"{request.path}{joiner}{_quote(key)}={_quote(value)}")


def mutations(
    request: HttpRequest, aws_index: AwsIndex, other: str, how: int
) -> HttpRequest | None:
    """``request`` with its identifying member given ``other`` as well, or None when
    this operation's identifier cannot be given twice on its protocol."""
    [reading] = read_request(request, aws_index).readings
    found = reading.found
    assert isinstance(found, Match)
    op = found.op
    params = reading.params or {}
    if op.ident is None or op.ident.member not in params:
        return None
    member = op.ident.member
    if found.protocol == "query":
        assert op.form_shape is not None
        wire = next(w for w, m, _s in op.form_shape.fields if m == member)
        body = request.body.decode()
        keys = [k for k, _ in (p.partition("=")[::2] for p in body.split("&"))]
        key = next((k for k in keys if k == wire or k.startswith(wire + ".")), None)
        if key is None:
            return None
        variants = [key, key.lower() if key.lower() != key else f"member.{key}", f"{wire}.member"]
        extra = f"{_quote(variants[how % 3])}={_quote(other)}"
        new = f"{extra}&{body}" if how % 2 else f"{body}&{extra}"
        return replace(request, body=new.encode())
    if found.protocol == "json":
        wire = next((w for w, m in op.body_wire.items() if m == member), member)
        value = json.dumps([other] if isinstance(params[member], list) else other)
        key = json.dumps(wire if how % 3 else wire.upper())
        text = request.body.decode().strip()
        assert text.startswith("{")
        entry = f"{key}: {value}"
        body = "{" + entry + ", " + text[1:] if how % 2 else text[:-1] + ", " + entry + "}"
        return replace(request, body=body.encode())
    if found.protocol == "rest":
        if member in op.labels:
            return _with_query(request, member if how % 2 else member.lower(), other)
        query = dict((m, w) for w, m in op.query_members)
        if member in query and query[member] not in op.query_lists:
            return _with_query(request, query[member], other)
        header = dict((m, w) for w, m in op.header_members)
        if member in header:
            return replace(request, headers=(*request.headers, (header[member], other)))
    return None


@PROPERTY
@given(drawn=botocore_requests(), suffix=NAME, how=st.integers(min_value=0, max_value=5))
def test_a_second_value_for_the_target_is_never_dropped(
    drawn: tuple[str, str, dict[str, Any], HttpRequest],
    suffix: str,
    how: int,
) -> None:
    service, operation, _params, request = drawn
    aws_index = index()
    action = recognise(request, RecogniseSettings(), aws_index=aws_index)
    assume((action.service, action.operation) == (service, operation) and not action.readings)
    other = f"zz-other-{suffix}"
    mutated = mutations(request, aws_index, other, how)
    assume(mutated is not None)
    assert mutated is not None
    polluted = recognise(mutated, RecogniseSettings(), aws_index=aws_index)
    everything = polluted.all_readings()
    assert polluted.confidence is Confidence.AMBIGUOUS or polluted.verb is Verb.UNKNOWN
    assert any(t.startswith("ambiguous:") for t in polluted.risk_tags)
    assert any(
        other in (r.resource.name + "/" + r.resource.id) or r.verb is Verb.UNKNOWN
        for r in everything
    ), [r.summary() for r in everything]

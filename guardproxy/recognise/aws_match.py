"""Which AWS service and operation a request is, using only the model index.

The protocol is read from the request's shape, not from the model: the same service
arrives as awsQuery, awsJson or RPC-v2-CBOR depending on the SDK's age (SQS and
CloudWatch moved from query to JSON; CloudWatch also speaks CBOR), so every encoding
is read:

1. ``X-Amz-Target: <targetPrefix>.<Operation>`` -> awsJson;
2. ``/service/<targetPrefix>/operation/<Operation>`` -> Smithy RPC v2 CBOR;
3. an ``Action=`` form field (query string or form body) -> awsQuery / EC2;
4. REST: the method plus the most specific matching URI template.

An SDK request carries exactly one of them. A request that carries several (a target
header on a REST call, ``Action`` in the query and another in the body, two target
headers, a method override header) names several operations, and which one a server
runs depends on how it routes: AWS routes by endpoint and protocol, moto's
``QueryRouter`` takes the first ``Action`` of the query string then the form body
(``moto/core/routing.py``), a front end may honour ``X-HTTP-Method-Override`` (no AWS
one is documented to, and no botocore serialiser sends it). Every one found is
returned (:class:`Resolution`) and becomes a reading.

Candidate models come from the SigV4 signing name (several models can share one:
``s3``/``s3control``, ``rds``/``docdb``/``neptune``), intersected with the models
behind the host's endpoint prefix when both are known. Custom endpoints (moto,
LocalStack, VPC endpoints) are recognised from the signing name alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

from guardproxy.action import Confidence
from guardproxy.recognise.aws_index import AwsIndex
from guardproxy.recognise.aws_params import ALIAS, significant
from guardproxy.recognise.aws_spec import ModelSpec, OpSpec
from guardproxy.recognise.aws_wire import Credential, HostInfo
from guardproxy.recognise.request import HttpRequest

_CBOR_PATH = re.compile(r"^/service/([^/]+)/operation/([^/]+)$")
_REST_PROTOCOLS = frozenset({"rest-json", "rest-xml"})
_METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})

OPERATION = "ambiguous:operation"
VERSION = "ambiguous:version"
METHOD_OVERRIDE = "ambiguous:method-override"


@dataclass(frozen=True, slots=True)
class Match:
    """A resolved operation and what matching already read off the request."""

    model: ModelSpec
    op: OpSpec
    protocol: str  # json | cbor | query | rest
    confidence: Confidence
    labels: dict[str, str] = field(default_factory=dict)  # member -> URI label value


@dataclass(frozen=True, slots=True)
class Unmatched:
    """An AWS request whose operation the models do not know.

    ``operation`` is set when the wire names it anyway (a target header or ``Action=``
    of an operation newer than the installed botocore).
    """

    service: str
    operation: str = ""


def candidate_models(
    index: AwsIndex, credential: Credential | None, host: HostInfo
) -> list[ModelSpec]:
    """Models the request may belong to, most canonical first."""
    by_signing: tuple[str, ...] = ()
    if credential is not None:
        by_signing = index.tables.by_signing.get(credential.service, ())
    by_host: tuple[str, ...] = ()
    for prefix in host.prefixes:
        by_host += index.tables.by_prefix.get(prefix, ())
    if by_signing and by_host:
        names = [n for n in by_signing if n in by_host] or list(by_signing)
    else:
        names = list(by_signing or by_host)
    signing = credential.service if credential is not None else ""
    prefix = host.prefixes[0] if host.prefixes else ""

    def rank(name: str) -> tuple[int, str]:
        return (0 if name in (signing, prefix) else 1, name)

    models = [index.model(n) for n in sorted(set(names), key=rank)]
    return [m for m in models if m is not None]


def _by_target(
    index: AwsIndex, candidates: list[ModelSpec], target: str, operation: str, fallback: str
) -> Match | Unmatched:
    """awsJson / CBOR: the target prefix names the model, the rest the operation."""
    names = index.tables.by_target.get(target, ())
    preferred = [m for m in candidates if m.name in names]
    others = [m for n in names if (m := index.model(n)) is not None and m not in preferred]
    for model in preferred + others:
        op = model.ops.get(operation)
        if op is not None:
            return Match(model, op, "json", Confidence.EXACT)
    service = (preferred + others)[0].name if preferred + others else fallback
    return Unmatched(service, operation)


@dataclass(frozen=True, slots=True)
class Resolution:
    """Every operation the request may invoke (most likely first) and the
    ambiguities matching found (``ambiguous:*`` tags)."""

    found: tuple[Match | Unmatched, ...]
    tags: frozenset[str] = frozenset()


def form_fields(
    request: HttpRequest, body_pairs: list[tuple[str, str]] | None
) -> list[tuple[str, str]]:
    """The awsQuery fields of a request: query string first, then the form body, as
    werkzeug's ``request.values`` (which moto routes and parses by) orders them."""
    return [*request.query, *(body_pairs or ())]


def _named(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """Distinct values of the ``Action`` and ``Version`` fields, each with whether it
    came only from a key a lenient server might take for it (other case, list
    markers: ``action``, ``Action.1``)."""
    actions: dict[str, bool] = {}
    versions: dict[str, bool] = {}
    for key, value in pairs:
        if key == "Action":
            actions[value] = False
        elif key == "Version":
            versions[value] = False
        else:
            lowered = key.lower()
            if "action" in lowered and significant(key) == "action":
                actions.setdefault(value, True)
            elif "version" in lowered and significant(key) == "version":
                versions.setdefault(value, True)
    return list(actions.items()), list(versions.items())


def _by_form(
    index: AwsIndex, candidates: list[ModelSpec], action: str, versions: list[str]
) -> tuple[list[Match], bool]:
    """awsQuery / EC2: ``Action`` names the operation; ``Version`` picks among siblings.

    With no candidate model (no signature, no AWS host: an emulator reached without
    credentials) every model speaking the action is a candidate. Returns the matches
    and whether a ``Version`` was given that no matching model has.
    """
    pool = candidates or [
        m for n in index.tables.by_action.get(action, ()) if (m := index.model(n)) is not None
    ]
    speaking = [m for m in pool if m.speaks_query and action in m.ops]
    if not speaking:
        return [], False
    found: list[Match] = []
    for version in versions or [""]:
        model = next((m for m in speaking if m.api_version == version), speaking[0])
        if all(f.model is not model for f in found):
            found.append(Match(model, model.ops[action], "query", Confidence.EXACT))
    mismatch = bool(versions) and not any(m.api_version in versions for m in speaking)
    return found, mismatch


def _literal_hits(op: OpSpec, query: dict[str, str]) -> int | None:
    """How many of the template's literal query keys the request has; None if one is missing.

    ``x-id`` (S3's operation hint) is optional: newer SDKs send it, older ones do not.
    """
    hits = 0
    for key, value in op.query_literals:
        if key == "x-id":
            continue
        if key not in query or (value and query[key] != value):
            return None
        hits += 1
    if query.get("x-id") == op.name:
        hits += 1
    return hits


def _rest_paths(
    candidates: list[ModelSpec], raw_path: str, host: HostInfo
) -> Iterator[tuple[int, ModelSpec, str, bool]]:
    """(rank, model, path to match, only ops with a host prefix) for each REST candidate.

    Labels in front of an S3 endpoint are a virtual-hosted bucket, so the path is
    matched with ``/<bucket>`` in front; they may also be an operation's host prefix
    (``{RequestRoute}.s3-object-lambda...``), so the bare path is tried as well, for
    operations that declare one.
    """
    for rank, model in enumerate(candidates):
        if not _REST_PROTOCOLS.intersection(model.protocols):
            continue
        if host.bucket and model.name == "s3":
            prefixed = "/" + host.bucket + ("" if raw_path == "/" else raw_path)
            yield rank, model, prefixed.rstrip("/") or "/", False
            if host.prefixes == ("s3-object-lambda",):  # the S3 endpoint with host prefixes
                yield rank, model, raw_path.rstrip("/") or "/", True
        else:
            yield rank, model, raw_path.rstrip("/") or "/", False


def _rest(
    index: AwsIndex,
    candidates: list[ModelSpec],
    request: HttpRequest,
    host: HostInfo,
    credential: Credential | None,
    method: str,
) -> Match | None:
    methods: tuple[str, ...] = ("HEAD", "GET") if method == "HEAD" else (method,)
    query = dict(request.query)
    headers = {name for name, _ in request.headers}
    raw_path = request.path_only
    express = bool(credential is not None and credential.service == "s3express") or (
        request.host.startswith("s3express-control")
    )
    best: tuple[tuple[int, ...], ModelSpec, OpSpec, re.Match[str]] | None = None
    runner_up: tuple[int, ...] | None = None
    for rank, model, path, needs_host_prefix in _rest_paths(candidates, raw_path, host):
        first = path.lstrip("/").split("/", 1)[0]
        for wanted in methods:
            for route in index.routes(model, wanted, first, query):
                op = route.op
                if needs_host_prefix and not op.host_prefix:
                    continue
                hits = _literal_hits(op, query)
                if hits is None:
                    continue
                found = route.regex.match(path)
                if found is None:
                    continue
                required = sum(1 for q in op.required_query if q in query) + sum(
                    1 for h in op.required_headers if h in headers
                )
                if required < len(op.required_query) + len(op.required_headers):
                    continue
                agrees = 1 if op.host_prefix and request.host.startswith(op.host_prefix) else 0
                score: tuple[int, ...] = (
                    1 if wanted == method else 0,
                    hits,
                    op.literal_len,
                    required,
                    1 if op.express == express else 0,
                    agrees,
                    0 if op.greedy else 1,
                    0 if op.deprecated else 1,
                    -rank,
                )
                if best is None or score > best[0]:
                    if best is not None and best[2].name != op.name:
                        runner_up = best[0]
                    best = (score, model, op, found)
                elif op.name != best[2].name and (runner_up is None or score > runner_up):
                    runner_up = score
    if best is None:
        return None
    score, model, op, found = best
    labels = {
        member: unquote(value) for member, value in zip(op.labels, found.groups(), strict=False)
    }
    # Two operations fitting equally well (model rank aside) are reported as such.
    tied = runner_up is not None and runner_up[:-1] == score[:-1]
    return Match(model, op, "rest", Confidence.AMBIGUOUS if tied else Confidence.EXACT, labels)


def _methods(request: HttpRequest) -> list[str]:
    """The request's method, then any other a method-override header names."""
    methods = [request.method.upper()]
    for name, value in request.headers:
        if name in _METHOD_OVERRIDES:
            for item in value.split(","):
                method = item.strip().upper()
                if method and method.isalpha() and method not in methods:
                    methods.append(method)
    return methods


def _header_items(request: HttpRequest, name: str) -> list[str]:
    """Every value of header ``name``, and each comma-separated item of one: HTTP lets
    a proxy or server fold repeated headers into one list (RFC 9110, 5.3), and a
    server may take either form."""
    items: list[str] = []
    for value in request.header_values(name):
        for raw in (value, *value.split(",")) if "," in value else (value,):
            item = raw.strip()
            if item and item not in items:
                items.append(item)
    return items


def resolve_all(
    index: AwsIndex,
    request: HttpRequest,
    credential: Credential | None,
    host: HostInfo,
    form_pairs: list[tuple[str, str]] | None,
) -> Resolution:
    """Every operation ``request`` may invoke, or what is known when no model has it.

    ``form_pairs`` are the decoded ``application/x-www-form-urlencoded`` body fields
    (None when the body is not a form).
    """
    candidates = candidate_models(index, credential, host)
    # With no model to name it, the signing name is what the wire says the service is.
    fallback = (
        (credential.service if credential is not None else "")
        or (candidates[0].name if candidates else "")
        or (host.prefixes[0] if host.prefixes else "")
    )
    found: list[Match | Unmatched] = []
    tags: set[str] = set()

    for target in _header_items(request, "x-amz-target"):
        if "." in target:
            prefix, _, operation = target.rpartition(".")
            found.append(_by_target(index, candidates, prefix, operation, fallback))

    cbor_path = _CBOR_PATH.match(request.path_only)
    if cbor_path is not None:
        target_prefix, operation = unquote(cbor_path.group(1)), unquote(cbor_path.group(2))
        by_path = _by_target(index, candidates, target_prefix, operation, fallback)
        if isinstance(by_path, Match):
            by_path = Match(by_path.model, by_path.op, "cbor", by_path.confidence)
        found.append(by_path)

    pairs = form_fields(request, form_pairs)
    actions, versions = _named(pairs) if pairs else ([], [])
    if actions:
        version_names = [v for v, _alias in versions]
        rest_spoken = any(_REST_PROTOCOLS.intersection(m.protocols) for m in candidates)
        spoken = False
        for action, alias in actions:
            if not action:
                continue
            by_form, mismatch = _by_form(index, candidates, action, version_names)
            if by_form:
                spoken = True
                tags.update({ALIAS} if alias else ())
                tags.update({VERSION} if mismatch else ())
            elif not alias and not rest_spoken:
                found.append(Unmatched(fallback, action))
            found.extend(by_form)
        if spoken and len(versions) > 1:
            tags.add(VERSION)
        if spoken and any(alias for _v, alias in versions):
            tags.add(ALIAS)

    methods = _methods(request) if any(m.speaks_rest for m in candidates) else []
    for method in methods:
        rest = _rest(index, candidates, request, host, credential, method)
        if rest is not None:
            if method != methods[0]:
                tags.add(METHOD_OVERRIDE)
            found.append(rest)

    if len(found) == 1:
        return Resolution((found[0],), frozenset(tags))
    distinct: list[Match | Unmatched] = []
    seen: set[tuple[str, str, str]] = set()
    for item in found:
        key = (
            (item.model.name, item.op.name, item.protocol)
            if isinstance(item, Match)
            else ("", item.service, item.operation)
        )
        if key not in seen:
            seen.add(key)
            distinct.append(item)
    if not distinct:
        return Resolution((Unmatched(fallback),), frozenset(tags))
    operations = {
        (i.model.name, i.op.name) if isinstance(i, Match) else (i.service, i.operation)
        for i in distinct
    }
    if len(operations) > 1:
        tags.add(OPERATION)
    return Resolution(tuple(distinct), frozenset(tags))


def resolve(
    index: AwsIndex,
    request: HttpRequest,
    credential: Credential | None,
    host: HostInfo,
    form_pairs: list[tuple[str, str]] | None,
) -> Match | Unmatched:
    """The most likely operation ``request`` invokes (see :func:`resolve_all`)."""
    return resolve_all(index, request, credential, host, form_pairs).found[0]

"""The AWS recogniser: a signed AWS API request -> an Action.

Service and operation come from botocore's models (``aws_index``/``aws_match``); the
verb class from the operation name (``aws_verbs``); the resource from the member the
model marks as identifying (``OpSpec.ident``); risk tags from the parameters
(``aws_risk``). Parameters are read from wherever the protocol puts them: URI labels,
query string, headers, form, JSON, XML or CBOR body (``aws_params``).

A request an SDK could not have sent is read every way a server may read it: each
SigV4 scope it carries (header and presigned query, two headers), each operation the
wire names (target header, CBOR path, ``Action`` in the query and in the body, the
REST route, a method override), each value a member is given (a key repeated or
spelled another way, a URI member also in the body). Each combination is an action;
the most dangerous comes first, the others are its ``readings``, all decided by the
policy engine (the strictest outcome applies). Past :data:`MAX_READINGS` an unknown
reading is added, which the bundle never allows by default.

The operations a data-plane call carries in its payload (SQL sent through the RDS Data,
Redshift Data and Athena APIs, DynamoDB deletes inside batches and transactions,
DynamoDB PartiQL statements: ``aws_payload``) are further readings of the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from guardproxy.action import Action, Confidence, Environment, Provider, Resource, Scope, Verb
from guardproxy.recognise.aws_index import AwsIndex
from guardproxy.recognise.aws_match import Match, Unmatched, form_fields, resolve_all
from guardproxy.recognise.aws_names import arn_parts, arn_resource_name
from guardproxy.recognise.aws_params import (
    ALIAS,
    UNPARSED,
    ParamReadings,
    form_params,
    rest_params,
    rpc_params,
    significant,
)
from guardproxy.recognise.aws_payload import carries_payload, payload_actions, unmodelled_params
from guardproxy.recognise.aws_risk import dry_run, risk_tags
from guardproxy.recognise.aws_spec import ModelSpec, OpSpec
from guardproxy.recognise.aws_verbs import classify
from guardproxy.recognise.aws_wire import Credential, HostInfo, credential_scopes, parse_host
from guardproxy.recognise.common import (
    NAME_LIMIT,
    actor_of,
    cap,
    decoded_body,
    resource_key,
    summary_of,
)
from guardproxy.recognise.environment import environment_from_names
from guardproxy.recognise.hosts import canonical_host
from guardproxy.recognise.request import HttpRequest

_ACCOUNT = re.compile(r"^\d{12}$")
_OPERATION_NAME = re.compile(r"^[A-Z][A-Za-z0-9]{1,127}$")

MAX_READINGS = 16
"""Most actions one request is read as; beyond it, an unknown reading is added."""

BODY_LIMIT = 16 * 1024 * 1024
"""Largest decoded body read for parameters: above the proxy's body limit (10 MiB by
default, refused before recognition), so a large upload (a Lambda zip inlined in JSON)
is still read. A body past it (a raised body limit, or a compressed body inflating
past it) has unknown parameters: an unknown reading."""

CREDENTIAL = "ambiguous:credential"
HOST = "ambiguous:host"
TOO_MANY = "ambiguous:too-many-readings"

_DANGER = {
    Verb.DESTROY: 8,
    Verb.PERMISSION: 7,
    Verb.DELETE: 6,
    Verb.EXECUTE: 5,
    Verb.UNKNOWN: 4,
    Verb.UPDATE: 3,
    Verb.CREATE: 2,
    Verb.READ: 0,
}
_ENVIRONMENT_DANGER = {
    Environment.PROD: 3,
    Environment.UNKNOWN: 2,
    Environment.STAGING: 1,
    Environment.DEV: 0,
}


def _form_pairs(request: HttpRequest) -> list[tuple[str, str]] | None:
    """Decoded form fields of the body, when it is one.

    A form body is ``application/x-www-form-urlencoded``; a body of another type is
    read as a form too when it is one with an ``Action`` field, since moto reads a
    body without a form type as a query string when the URL has none
    (``moto/core/responses.py``, ``BaseResponse.setup_class``). Other bodies wait
    until the matched operation says they hold parameters.
    """
    content_type = request.header("content-type").lower()
    form = "x-www-form-urlencoded" in content_type
    if not form:
        head = request.body.lstrip()[:1]
        if not head or head in (b"{", b"<", b"[") or b"ction" not in request.body:
            return None
    body = decoded_body(request)
    if not body:
        return None
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    if form or any(significant(key) == "action" for key, _ in pairs):
        return pairs
    return None


def _body_holds_parameters(match: Match) -> bool:
    return match.protocol in ("json", "cbor") or (match.protocol == "rest" and match.op.parse_body)


def _reads_body(match: Match) -> bool:
    """Whether the body may hold parameters: always for awsJson and CBOR, for REST
    when the input has body members (a streamed payload, such as S3 object data, is
    not decoded)."""
    if match.protocol == "query":
        return False
    return match.protocol in ("json", "cbor") or match.op.parse_body or not match.op.payload


def parameters(
    match: Match,
    request: HttpRequest,
    form_pairs: list[tuple[str, str]] | None,
    body: bytes | None,
) -> ParamReadings:
    """The operation's input parameters by member name, with every other value the
    request gives a member (see ``aws_params``)."""
    if match.protocol == "rest":
        xml = "rest-xml" in match.model.protocols
        return rest_params(match.op, match.labels, request, body, xml)
    if match.protocol == "query":
        found = form_params(form_fields(request, form_pairs), match.op.form_shape)
    else:
        found = rpc_params(match.op, body, match.protocol == "cbor")
    _url_from_path(match.op, request, found)
    return found


def _url_from_path(op: OpSpec, request: HttpRequest, found: ParamReadings) -> None:
    """An RPC call sent to a resource's URL names the resource by its path too.

    SQS accepted requests posted to the queue URL itself (``POST /<account>/<queue>``)
    before ``QueueUrl`` existed, and servers still read the path when the parameter is
    missing (moto: ``moto/sqs/responses.py``, ``SQSResponse._get_queue_name``, the
    parameter first, then the path's last segment). A path that names another resource
    than the parameter is read both ways.
    """
    ident = op.ident
    path = request.path_only
    if ident is None or ident.kind != "url" or path.rstrip("/") in ("", "/service"):
        return
    if path.startswith("/service/"):  # the RPC v2 CBOR route, not a resource
        return
    url = f"{request.scheme}://{request.host}{path}"
    given = found.canonical.get(ident.member)
    if isinstance(given, str) and _last_segment(given) != _last_segment(url):
        found.tags.add(ALIAS)
    found.offer(ident.member, url)


def _last_segment(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def _first_string(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return value if isinstance(value, str) else ""


def _account_hint(params: dict[str, Any], host: HostInfo) -> str:
    """The account a request names without an ARN: host label or an account parameter."""
    if host.account:
        return host.account
    # Only parameters that name the target's own account: an ARN elsewhere in the
    # input (a role to assume, a topic to notify) may well be another account's.
    for member in ("AccountId", "ExpectedBucketOwner", "accountId"):
        value = params.get(member)
        if isinstance(value, str) and _ACCOUNT.match(value):
            return value
    return ""


def _resource(
    model: ModelSpec, op: OpSpec, params: dict[str, Any], host: HostInfo
) -> tuple[str, str, str, str, int]:
    """(type, name, id, account, how many resources) of the operation's target."""
    rtype = f"aws:{model.name}:{op.resource}" if op.resource else ""
    ident = op.ident
    name = rid = account = ""
    count = 0
    raw = params.get(ident.member) if ident is not None else None
    if ident is not None and raw not in (None, ""):
        count = len(raw) if isinstance(raw, list) else 1
        first = _first_string(raw)
        parts = arn_parts(first)
        if parts is not None:
            rid, name, account = first, arn_resource_name(parts[0], parts[3]), parts[2]
        elif ident.kind == "url":
            url_path = urlsplit(first).path.rstrip("/")
            name = url_path.rsplit("/", 1)[-1]
            segments = [s for s in url_path.split("/") if s]
            account = next((s for s in segments if _ACCOUNT.match(s)), "")
        elif ident.kind in ("id", "arn"):
            rid = first
        else:
            name = first
    if model.name == "s3":
        bucket = _first_string(params.get("Bucket")) or host.bucket
        if ident is not None and ident.member == "Key" and name:
            name = f"{bucket}/{name}" if bucket else name
        elif not name and not rid and bucket:
            name = bucket
    return rtype, name, rid, account or _account_hint(params, host), count


def _unmatched(request: HttpRequest, found: Unmatched, region: str, account: str) -> Action:
    """An AWS request no model explains: fail closed unless the wire names the operation.

    When it does (an operation newer than the installed botocore), the name still gives
    a verb class, marked heuristic; but only a name shaped like an AWS operation name
    (``DeleteStack``): ``DescribeStacks;Action=DeleteStack`` starts with a read verb,
    and a server that also splits fields on ``;`` runs the delete.
    """
    named = bool(_OPERATION_NAME.match(found.operation))
    verb = classify(found.service, found.operation) if named else Verb.UNKNOWN
    return Action(
        provider=Provider.AWS,
        service=found.service,
        operation=found.operation[:NAME_LIMIT],
        verb=verb,
        scope=Scope(region=region, account=account),
        actor=actor_of(request),
        request=summary_of(request),
        confidence=Confidence.HEURISTIC if verb is not Verb.UNKNOWN else Confidence.UNKNOWN,
    )


def _action(
    request: HttpRequest,
    match: Match,
    params: dict[str, Any],
    host: HostInfo,
    region: str,
) -> Action:
    model, op = match.model, match.op
    verb = classify(model.name, op.name, model.resource_nouns)
    rtype, name, rid, account, count = _resource(model, op, params, host)
    name, cut_name = cap(name)
    rid, cut_id = cap(rid)
    tags = risk_tags(model.name, op.name, verb, params, count)
    return Action(
        provider=Provider.AWS,
        service=model.name,
        operation=op.name,
        verb=verb,
        resource=Resource(
            type=rtype,
            name=name,
            id=rid,
            key=resource_key("aws", ("", region), rtype, name or rid),
        ),
        scope=Scope(account=account, region=region),
        risk_tags=tags,
        actor=actor_of(request),
        request=summary_of(request),
        confidence=match.confidence,
        dry_run=dry_run(params),
        truncated=cut_name or cut_id,
    )


def _header_host(request: HttpRequest) -> str:
    """The host the ``Host`` header names (port and brackets removed)."""
    value = request.host_header.strip()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def _contexts(
    index: AwsIndex, request: HttpRequest
) -> tuple[list[tuple[Credential | None, HostInfo]], set[str]]:
    """The (SigV4 scope, endpoint host) pairs to read the request under, and the
    ambiguities that made there be more than one.

    * Several scopes (two ``Authorization`` headers, header and presigned query) are
      each a reading.
    * A scope whose signing name names no model behind the host's endpoint prefix (a
      ``cloudformation`` signature sent to ``s3.amazonaws.com``) is read under the
      host's models as well: AWS routes by endpoint, emulators by the signing name.
    * A ``Host`` header naming another AWS endpoint than the connection's destination
      is read as well: AWS's front ends (S3's virtual hosting) and LocalStack route by
      the Host header, not by the address the client connected to.
    """
    hosts = [parse_host(request.host, index.prefixes)]
    tags: set[str] = set()
    claimed = _header_host(request)
    if (
        claimed
        and claimed != request.host
        and canonical_host(claimed) != canonical_host(request.host)
    ):
        other = parse_host(claimed, index.prefixes)
        if other != hosts[0] and (other.prefixes or other.bucket):
            hosts.append(other)
            tags.add(HOST)
    scopes: list[Credential | None] = list(credential_scopes(request)) or [None]
    if len(scopes) > 1:
        tags.add(CREDENTIAL)
    contexts: list[tuple[Credential | None, HostInfo]] = []
    for host in hosts:
        by_host = [n for prefix in host.prefixes for n in index.tables.by_prefix.get(prefix, ())]
        mismatch = False
        for scope in scopes:
            contexts.append((scope, host))
            if scope is not None and by_host:
                by_signing = index.tables.by_signing.get(scope.service, ())
                mismatch = mismatch or bool(
                    by_signing and not any(n in by_signing for n in by_host)
                )
        if mismatch:
            contexts.append((None, host))
            tags.add(CREDENTIAL)
    return contexts, tags


def _danger(action: Action) -> tuple[int, int, int, int]:
    """Sort key, most dangerous first: verb class, environment the names suggest,
    risk tags, and a real change before a dry run."""
    names = [n for n in (action.resource.name, action.resource.id) if n]
    environment = environment_from_names(names) if names else Environment.UNKNOWN
    return (
        -_DANGER[action.verb],
        -_ENVIRONMENT_DANGER[environment],
        -len(action.risk_tags),
        1 if action.dry_run else 0,
    )


@dataclass(frozen=True, slots=True)
class Reading:
    """One way a server may read the request: the operation and its parameters by
    member name (``params`` is None when no model knows the operation)."""

    found: Match | Unmatched
    params: dict[str, Any] | None
    region: str
    host: HostInfo


@dataclass
class Readings:
    """Every reading of a request, the ambiguities found, and whether all fitted."""

    readings: list[Reading] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    complete: bool = True


def read_request(request: HttpRequest, index: AwsIndex) -> Readings:
    """Every (operation, parameters) a server may read ``request`` as, canonical first.

    A request an SDK sent has exactly one; see the module docstring for the others.
    """
    form_pairs = _form_pairs(request)
    body: bytes | None = None
    body_read = False
    contexts, tags = _contexts(index, request)
    out = Readings(tags=tags)
    for credential, host in contexts:
        region = (credential.region if credential is not None else "") or host.region
        resolution = resolve_all(index, request, credential, host, form_pairs)
        out.tags |= resolution.tags
        for found in resolution.found:
            if isinstance(found, Unmatched):
                out.readings.append(Reading(found, None, region, host))
                continue
            if not body_read and _reads_body(found):
                body, body_read = decoded_body(request, BODY_LIMIT), True
            candidates = parameters(found, request, form_pairs, body)
            out.tags |= candidates.tags
            if body is None and request.body and _body_holds_parameters(found):
                # an encoding we cannot undo, or a body past the limit: its
                # parameters (a force flag, the target) are unknown
                out.tags.add(UNPARSED)
            params_list, fits = candidates.expand(MAX_READINGS)
            out.complete = out.complete and fits
            out.readings.extend(Reading(found, p, region, host) for p in params_list)
    return out


def _reading_action(request: HttpRequest, reading: Reading) -> Action:
    if isinstance(reading.found, Unmatched):
        return _unmatched(request, reading.found, reading.region, reading.host.account)
    return _action(request, reading.found, reading.params or {}, reading.host, reading.region)


def recognise_aws(request: HttpRequest, index: AwsIndex) -> Action:
    """The Action for an AWS API request (environment is resolved by the caller).

    The resource key leaves the account segment empty (``aws::<region>:<type>/<name>``):
    a create names no account (``CreateQueue`` has ``QueueName``, ``CreateStack`` a
    name) while the delete often does (a queue URL, a stack ARN), and a delete and
    the re-create must key alike. The account stays in ``scope.account``; two accounts
    with a same-named resource in one region share a key, which errs toward holding.

    A request with several readings (see the module docstring) returns the most
    dangerous with the others as ``readings``, ``confidence`` ambiguous and the
    ``ambiguous:*`` tags naming why on each.
    """
    found = read_request(request, index)
    actions = [_reading_action(request, r) for r in found.readings]
    carried: list[Action] = []
    for reading, action in zip(found.readings, actions, strict=True):
        params = reading.params
        if params is None and carries_payload(action.service, action.operation):
            params = unmodelled_params(decoded_body(request, BODY_LIMIT))
        carried += payload_actions(action, params)
    combined = _combine(request, actions, found.tags, found.complete)
    return _with_payload(combined, carried) if carried else combined


def _with_payload(action: Action, carried: list[Action]) -> Action:
    """``action`` with the operations its payload carries as further readings, the most
    dangerous of all first."""
    every = [action.model_copy(update={"readings": []}), *action.readings, *carried]
    distinct = list({a.model_dump_json(): a for a in every}.values())
    distinct.sort(key=_danger)
    return distinct[0].model_copy(update={"readings": distinct[1:]})


def _combine(request: HttpRequest, actions: list[Action], tags: set[str], complete: bool) -> Action:
    """One action from every reading: distinct ones, most dangerous first."""
    distinct: list[Action] = actions[:1]
    if len(actions) > 1:
        seen: set[str] = set()
        distinct = []
        for action in actions:
            key = action.model_dump_json()
            if key not in seen:
                seen.add(key)
                distinct.append(action)
    if UNPARSED in tags or not complete or len(distinct) > MAX_READINGS:
        if not complete or len(distinct) > MAX_READINGS:
            tags.add(TOO_MANY)
        distinct = distinct[: MAX_READINGS - 1]
        first = distinct[0]
        distinct.append(
            Action(
                provider=Provider.AWS,
                service=first.service,
                scope=first.scope,
                actor=first.actor,
                request=first.request,
            )
        )
    if len(distinct) == 1 and not tags:
        return distinct[0]
    distinct.sort(key=_danger)
    marks = sorted(tags)
    marked = [
        a.model_copy(
            update={
                "risk_tags": [*a.risk_tags, *(t for t in marks if t not in a.risk_tags)],
                "confidence": Confidence.AMBIGUOUS if a.classified else a.confidence,
            }
        )
        for a in distinct
    ]
    return marked[0].model_copy(update={"readings": marked[1:]})

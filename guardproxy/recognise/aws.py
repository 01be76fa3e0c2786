"""The AWS recogniser: a signed AWS API request -> an Action.

Service and operation come from botocore's models (``aws_index``/``aws_match``); the
verb class from the operation name (``aws_verbs``); the resource from the member the
model marks as identifying (``OpSpec.ident``); risk tags from the parameters
(``aws_risk``). Parameters are read from wherever the protocol puts them: URI labels,
query string, headers, form, JSON, XML or CBOR body.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from guardproxy.action import Action, Confidence, Provider, Resource, Scope, Verb
from guardproxy.recognise.aws_index import AwsIndex
from guardproxy.recognise.aws_match import Match, Unmatched, resolve
from guardproxy.recognise.aws_names import arn_parts, arn_resource_name
from guardproxy.recognise.aws_risk import dry_run, risk_tags
from guardproxy.recognise.aws_spec import ModelSpec, OpSpec
from guardproxy.recognise.aws_verbs import classify
from guardproxy.recognise.aws_wire import (
    HostInfo,
    credential_scope,
    parse_cbor,
    parse_host,
    parse_json,
    parse_xml,
    rename,
)
from guardproxy.recognise.common import (
    actor_of,
    cap,
    decoded_body,
    resource_key,
    summary_of,
)
from guardproxy.recognise.request import HttpRequest

_ACCOUNT = re.compile(r"^\d{12}$")


def _form_pairs(request: HttpRequest) -> list[tuple[str, str]] | None:
    """Decoded form fields when the body is ``application/x-www-form-urlencoded``.

    Only then is the body decoded up front: awsQuery carries the operation in it.
    Other bodies wait until the matched operation says they hold parameters.
    """
    content_type = request.header("content-type").lower()
    if "x-www-form-urlencoded" not in content_type and not request.body.startswith(b"Action="):
        return None
    body = decoded_body(request)
    if not body:
        return None
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


def _wants_body(match: Match) -> bool:
    return match.protocol in ("json", "cbor") or match.op.parse_body


def _rest_params(match: Match, request: HttpRequest, body: bytes | None) -> dict[str, Any]:
    op = match.op
    params: dict[str, Any] = dict(match.labels)
    query: dict[str, list[str]] = {}
    for key, value in request.query:
        query.setdefault(key, []).append(value)
    for wire, member in op.query_members:
        if wire in query:
            values = query[wire]
            params[member] = values[0] if len(values) == 1 else values
    for wire, member in op.header_members:
        value = request.header(wire, "\0")
        if value != "\0":
            params[member] = value
    if not op.parse_body or not body:
        return params
    decoded: Any
    if "rest-xml" in match.model.protocols:
        parsed = parse_xml(body)
        decoded = parsed[1] if parsed is not None else None
    else:
        decoded = parse_json(body)
    if op.payload:
        if decoded is not None:
            params[op.payload] = decoded
    elif isinstance(decoded, dict):
        params.update(rename(decoded, op.body_names))
    return params


def parameters(match: Match, request: HttpRequest, body: bytes | None) -> dict[str, Any]:
    """The operation's input parameters by member name, as far as the wire carries them."""
    if match.protocol == "query":
        return rename(match.form or {}, match.op.form_names)
    if match.protocol in ("json", "cbor"):
        decoded = None
        if body:
            decoded = parse_cbor(body) if match.protocol == "cbor" else parse_json(body)
        return rename(decoded, match.op.body_names) if isinstance(decoded, dict) else {}
    return _rest_params(match, request, body)


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
    a verb class, marked heuristic.
    """
    verb = classify(found.service, found.operation) if found.operation else Verb.UNKNOWN
    return Action(
        provider=Provider.AWS,
        service=found.service,
        operation=found.operation,
        verb=verb,
        scope=Scope(region=region, account=account),
        actor=actor_of(request),
        request=summary_of(request),
        confidence=Confidence.HEURISTIC if verb is not Verb.UNKNOWN else Confidence.UNKNOWN,
    )


def recognise_aws(request: HttpRequest, index: AwsIndex) -> Action:
    """The Action for an AWS API request (environment is resolved by the caller).

    The resource key leaves the account segment empty (``aws::<region>:<type>/<name>``):
    a create names no account (``CreateQueue`` has ``QueueName``, ``CreateStack`` a
    name) while the delete often does (a queue URL, a stack ARN), and a delete and
    the re-create must key alike. The account stays in ``scope.account``; two accounts
    with a same-named resource in one region share a key, which errs toward holding.
    """
    credential = credential_scope(request)
    host = parse_host(request.host, index.prefixes)
    found = resolve(index, request, credential, host, _form_pairs(request))
    region = (credential.region if credential is not None else "") or host.region
    if isinstance(found, Unmatched):
        return _unmatched(request, found, region, host.account)

    model, op = found.model, found.op
    params = parameters(found, request, decoded_body(request) if _wants_body(found) else None)
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
        confidence=found.confidence,
        dry_run=dry_run(params),
        truncated=cut_name or cut_id,
    )

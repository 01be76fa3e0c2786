"""Operations an AWS data-plane request carries in its payload, beyond the API call.

Some AWS operations are envelopes: the call's name says little, its parameters say what
runs. Each operation inside is an action of its own (a reading of the request), decided
by the policy engine like the call itself:

* **SQL over the AWS data APIs**: RDS Data API ``ExecuteStatement``,
  ``BatchExecuteStatement`` (``sql``) and the deprecated ``ExecuteSql``
  (``sqlStatements``); Redshift Data API ``ExecuteStatement`` (``Sql``) and
  ``BatchExecuteStatement`` (``Sqls``); Athena ``StartQueryExecution``
  (``QueryString``). The text is read by the SQL recognisers' own readers: Aurora
  PostgreSQL with pglast and Aurora MySQL with sqlglot's MySQL dialect (the request
  does not say which engine the cluster runs, so both readings that parse count, and
  text neither parses is unknown), Redshift and Athena with sqlglot's dialects. Each
  statement is a ``sql`` action (``DROP TABLE`` is a destroy, an unfiltered ``DELETE``
  carries ``delete-without-where``).
* **DynamoDB deletes inside batches and transactions**: ``BatchWriteItem``
  ``DeleteRequest`` entries and ``TransactWriteItems`` ``Delete`` entries delete items
  exactly as ``DeleteItem`` does (API reference of each operation).
* **DynamoDB PartiQL**: ``ExecuteStatement``, ``BatchExecuteStatement`` and
  ``ExecuteTransaction`` statements. DynamoDB's PartiQL has four statements
  (``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE``: Amazon DynamoDB developer guide,
  "PartiQL select/insert/update/delete statements for DynamoDB"); no maintained Python
  parser of PartiQL exists, so a statement is classified by its leading keyword and
  anything else (a comment first, another word) is unknown.

A payload that names no such operation adds nothing; these actions never replace the
call's own action.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from guardproxy.action import Action, Confidence, Provider, Resource, Scope, Verb
from guardproxy.recognise.common import cap, resource_key
from guardproxy.recognise.sql_dialects import read_dialect
from guardproxy.recognise.sql_postgres import PostgresReader
from guardproxy.recognise.sql_statement import Part, SqlError, ordered

__all__ = ["carries_payload", "payload_actions", "unmodelled_params"]

MAX_PAYLOAD_OPERATIONS = 64
"""Operations read from one payload; more make one unknown action instead."""

_SQL_MEMBERS: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("rds-data", "ExecuteStatement"): ("sql", ("postgres", "mysql")),
    ("rds-data", "BatchExecuteStatement"): ("sql", ("postgres", "mysql")),
    ("rds-data", "ExecuteSql"): ("sqlStatements", ("postgres", "mysql")),
    ("redshift-data", "ExecuteStatement"): ("Sql", ("redshift",)),
    ("redshift-data", "BatchExecuteStatement"): ("Sqls", ("redshift",)),
    ("athena", "StartQueryExecution"): ("QueryString", ("athena",)),
}
"""(service, operation) -> (member holding the SQL text, dialects the server may speak)."""

_PARTIQL: dict[str, tuple[str, str]] = {
    "ExecuteStatement": ("Statement", ""),
    "BatchExecuteStatement": ("Statements", "Statement"),
    "ExecuteTransaction": ("TransactStatements", "Statement"),
}
"""DynamoDB operation -> (member, member of each list item holding the statement)."""

_PARTIQL_VERBS = {
    "SELECT": Verb.READ,
    "INSERT": Verb.CREATE,
    "UPDATE": Verb.UPDATE,
    "DELETE": Verb.DELETE,
}
_LEADING_WORD = re.compile(r"\s*([A-Za-z]+)\b")


def _texts(value: Any) -> list[Any]:
    """A member's values: a list member's items, a scalar once."""
    return list(value) if isinstance(value, list) else [value]


def _read_sql(text: Any, dialects: tuple[str, ...]) -> list[Part]:
    """The parts of ``text`` in every dialect that parses it; unknown when none does."""
    if not isinstance(text, str) or not text.strip():
        return [Part("UNPARSED", Verb.UNKNOWN, tags=("parse-error",))]
    parts: list[Part] = []
    for dialect in dialects:
        try:
            parts += (
                PostgresReader().read(text)
                if dialect == "postgres"
                else read_dialect(text, dialect)
            )
        except SqlError:
            continue
    return parts or [Part("UNPARSED", Verb.UNKNOWN, tags=("parse-error",))]


def _partiql(statement: Any) -> Part:
    found = _LEADING_WORD.match(statement) if isinstance(statement, str) else None
    verb = _PARTIQL_VERBS.get(found.group(1).upper()) if found else None
    if found is None or verb is None:
        return Part("PARTIQL", Verb.UNKNOWN, tags=("parse-error",))
    table = re.match(r'\s*\w+\s+(?:\*\s+)?(?:FROM|INTO)?\s*"?([\w.-]+)', statement, re.I)
    return Part(found.group(1).upper(), verb, "aws:dynamodb:item", table.group(1) if table else "")


def _dynamodb_parts(operation: str, params: dict[str, Any]) -> list[Part]:
    parts: list[Part] = []
    if operation == "BatchWriteItem":
        items = params.get("RequestItems")
        for table, requests in items.items() if isinstance(items, dict) else ():
            for request in _texts(requests):
                if isinstance(request, dict) and "DeleteRequest" in request:
                    parts.append(Part("DeleteItem", Verb.DELETE, "aws:dynamodb:item", str(table)))
    elif operation == "TransactWriteItems":
        for item in _texts(params.get("TransactItems") or []):
            delete = item.get("Delete") if isinstance(item, dict) else None
            if isinstance(delete, dict):
                table = str(delete.get("TableName") or "")
                parts.append(Part("DeleteItem", Verb.DELETE, "aws:dynamodb:item", table))
    elif operation in _PARTIQL:
        member, inner = _PARTIQL[operation]
        for value in _texts(params.get(member) or []):
            statement = value.get(inner) if inner and isinstance(value, dict) else value
            if statement is not None:
                parts.append(_partiql(statement))
    return parts


def _parts(service: str, operation: str, params: dict[str, Any]) -> list[Part]:
    if (service, operation) in _SQL_MEMBERS:
        member, dialects = _SQL_MEMBERS[(service, operation)]
        return [p for t in _texts(params.get(member)) for p in _read_sql(t, dialects)]
    if service == "dynamodb":
        return _dynamodb_parts(operation, params)
    return []


def carries_payload(service: str, operation: str) -> bool:
    """Whether ``service:operation`` is an envelope this module reads."""
    if (service, operation) in _SQL_MEMBERS:
        return True
    return service == "dynamodb" and (
        operation in _PARTIQL or operation in ("BatchWriteItem", "TransactWriteItems")
    )


def unmodelled_params(body: bytes | None) -> dict[str, Any] | None:
    """The parameters of a call the installed models do not describe (an older wire
    form: Athena was ``awsJson1.1`` with ``X-Amz-Target`` before its models moved to
    REST): the JSON object of its body, None when there is none to read."""
    if not body:
        return None
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def payload_actions(call: Action, params: dict[str, Any] | None) -> list[Action]:
    """The actions ``call`` (one reading of an AWS request, with its parameters) carries
    in its payload, the most dangerous first; none for an ordinary call. ``params``
    None (an envelope whose parameters cannot be read) is one unknown operation."""
    if params is None:
        if not carries_payload(call.service, call.operation):
            return []
        parts = [Part("UNREADABLE", Verb.UNKNOWN, tags=("parse-error",))]
    else:
        parts = _parts(call.service, call.operation, params)
    if not parts:
        return []
    found = ordered(parts)
    if len(found) > MAX_PAYLOAD_OPERATIONS:
        found = [Part("TOO MANY OPERATIONS", Verb.UNKNOWN, tags=("too-many-statements",))]
    make: Callable[[Part], Action] = (
        (lambda p: _dynamodb_action(call, p))
        if call.service == "dynamodb"
        else (lambda p: _sql_action(call, p))
    )
    return [make(p) for p in found]


def _confidence(part: Part) -> Confidence:
    return Confidence.UNKNOWN if part.verb is Verb.UNKNOWN else Confidence.EXACT


def _dynamodb_action(call: Action, part: Part) -> Action:
    name, truncated = cap(part.name)
    rtype = part.rtype or "aws:dynamodb:item"
    return call.model_copy(
        update={
            "verb": part.verb,
            "resource": Resource(
                type=rtype,
                name=name,
                key=resource_key("aws", ("", call.scope.region), rtype, name),
            ),
            "risk_tags": sorted({*part.tags}),
            "confidence": _confidence(part),
            "dry_run": False,
            "truncated": truncated,
            "readings": [],
        }
    )


def _sql_action(call: Action, part: Part) -> Action:
    name, truncated = cap(part.name)
    scope = Scope(account=call.scope.account, region=call.scope.region)
    return Action(
        provider=Provider.SQL,
        service=call.service,
        operation=part.operation,
        verb=part.verb,
        resource=Resource(
            type=part.rtype,
            name=name,
            key=resource_key("sql", [call.service, call.scope.region], part.rtype, name),
        ),
        scope=scope,
        risk_tags=sorted({*part.tags}),
        actor=call.actor,
        request=call.request,
        confidence=_confidence(part),
        truncated=truncated,
    )

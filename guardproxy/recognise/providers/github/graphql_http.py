"""GraphQL over HTTP, read with graphql-core: what each reading of a request executes.

The document is parsed by ``graphql-core`` (the Python port of graphql-js, GraphQL's
reference implementation), never by a grammar of our own. From the parsed document
this module follows the GraphQL specification's execution algorithm as far as it
decides *which root fields run with which arguments* (spec, "Executing Requests"):

* **GetOperation**: ``graphql.get_operation_ast`` selects the operation; the one
  operation when no ``operationName`` is given, else the one so named. Where the spec
  says "request error" (several operations and no name, no operation of that name,
  two operations of that name) nothing executes on a conforming server, but a server
  that picks one anyway is not unthinkable: every operation is decided, and the
  reading is tagged ``ambiguous:graphql-operation``.
* **CoerceVariableValues**: a variable is its provided value when ``variables`` has the
  key (``null`` included), else its default; only variables the operation declares
  exist (graphql-js ``coerceVariableValues``).
* **CollectFields**: root fields are collected through fragment spreads and inline
  fragments and grouped by response key (alias or name); ``@skip``/``@include`` are
  *not* honoured here, so a skipped field is still decided (stricter than the server).
* **Argument values**: ``graphql.utilities.value_from_ast_untyped`` with the coerced
  variables (literals, variables and variables inside lists and input objects).

The HTTP layer has no single rule GitHub documents, so every way a server may read the
request is a reading: the JSON body (each element of a JSON array batch), a raw
``application/graphql`` document, a form-encoded body, and ``query``/``operationName``/
``variables`` in the URL (a GET, or mixed with a body, as Rails' merged ``params``
would). Duplicate JSON keys give a first-wins and a last-wins reading; ``variables``
sent as a JSON string gives a parsed and an ignored reading. A reading that cannot be
read is an :class:`Execution` with an ``error``: the caller makes it an unclassified
action, never a read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product
from typing import Any
from urllib.parse import parse_qsl

from graphql import GraphQLError, get_operation_ast, parse
from graphql.language import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
)
from graphql.pyutils import Undefined
from graphql.utilities import value_from_ast_untyped

from guardproxy.recognise.common import decoded_body
from guardproxy.recognise.request import HttpRequest

__all__ = [
    "MAX_TOKENS",
    "Execution",
    "GraphQLReading",
    "Payload",
    "RootField",
    "execute_payload",
    "json_readings",
    "payloads_of",
    "read_graphql",
]

MAX_TOKENS = 100_000
"""Documents with more lexical tokens are not parsed (graphql-core aborts them): an
unreadable document is unclassified, so a huge one cannot buy time or memory."""

MAX_READINGS = 64
"""Payload readings considered per request (batches, duplicate keys and URL/body
combinations multiply); past this the request is unreadable."""

TAG_OPERATION = "ambiguous:graphql-operation"
TAG_VARIABLES = "ambiguous:graphql-variables"
TAG_BATCH = "ambiguous:graphql-batch"
TAG_SOURCE = "ambiguous:graphql-source"
TAG_DUPLICATE_KEY = "ambiguous:duplicate-key"
TAG_DUPLICATE_PARAMETER = "ambiguous:duplicate-parameter"

_KEYS = ("query", "operationName", "variables")


@dataclass(frozen=True)
class Payload:
    """One GraphQL request as a server may read it: the ``query``, ``operationName`` and
    ``variables`` members as given (any JSON value; absent is ``None``)."""

    query: Any
    operation_name: Any = None
    variables: Any = None
    error: str = ""
    """Why this reading of the HTTP request holds no request at all ("" when it does)."""
    parameters: bool = False
    """From URL or form parameters, where ``variables`` is JSON text by definition."""


@dataclass(frozen=True)
class RootField:
    """One root field the selected operation executes, with its argument values."""

    operation: str
    """``query``, ``mutation`` or ``subscription``: the type of its operation."""
    name: str
    response_key: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Execution:
    """What one reading executes: the root fields of one operation, or why it is unreadable.

    ``operation`` is the operation's type; ``fields`` its root fields in document order
    (one per response key; introspection fields such as ``__typename`` left out).
    """

    operation: str = ""
    fields: tuple[RootField, ...] = ()
    error: str = ""


@dataclass
class GraphQLReading:
    """Every execution any reading of the request may perform, and the ambiguities seen."""

    executions: list[Execution] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)


# ------------------------------------------------------------------ HTTP -> payloads


class _Pairs(list[tuple[str, Any]]):
    """A JSON object with its members in order, repeats kept (``object_pairs_hook``)."""


def _has_repeats(node: Any) -> bool:
    if isinstance(node, _Pairs):
        keys = [k for k, _ in node]
        return len(set(keys)) != len(keys) or any(_has_repeats(v) for _, v in node)
    if isinstance(node, list):
        return any(_has_repeats(v) for v in node)
    return False


def _resolve(node: Any, last_wins: bool) -> Any:
    if isinstance(node, _Pairs):
        out: dict[str, Any] = {}
        for key, value in node:
            if last_wins or key not in out:
                out[key] = _resolve(value, last_wins)
        return out
    if isinstance(node, list):
        return [_resolve(v, last_wins) for v in node]
    return node


def json_readings(text: str | bytes) -> tuple[list[Any], bool] | None:
    """The JSON value(s) of ``text``: one, or a first-wins and a last-wins value when an
    object repeats a key (parsers disagree on repeats: Ruby's and Python's keep the last,
    others the first); whether a key repeats; None when it is not JSON."""
    try:
        tree = json.loads(text, object_pairs_hook=_Pairs)
        if not _has_repeats(tree):
            return [_resolve(tree, True)], False
        return [_resolve(tree, False), _resolve(tree, True)], True
    except (ValueError, RecursionError):
        return None  # nested beyond Python's stack counts as unreadable too


def _from_json(value: Any) -> Payload:
    if not isinstance(value, dict):
        return Payload(None, error="a GraphQL request must be a JSON object")
    return Payload(value.get("query"), value.get("operationName"), value.get("variables"))


def _body_payloads(request: HttpRequest, tags: set[str]) -> list[Payload] | None:
    """Payloads the body may carry; None when there is no body."""
    body = decoded_body(request)
    if body is None:
        return [Payload(None, error="body too large or undecodable")]
    if not body.strip():
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return [Payload(None, error="body is not UTF-8")]
    found: list[Payload] = []
    readings = json_readings(text)
    if readings is not None:
        values, repeated = readings
        if repeated:
            tags.add(TAG_DUPLICATE_KEY)
        for value in values:
            if isinstance(value, list):
                # A batch: some servers run each element; GitHub documents none.
                tags.add(TAG_BATCH)
                found.extend(_from_json(v) for v in value)
                if not value:
                    found.append(Payload(None, error="empty batch"))
            else:
                found.append(_from_json(value))
        return found
    # application/graphql: the body is the document (express-graphql read it whatever
    # the content type said, and so may others), or a form with a ``query`` field.
    form = _form_payloads(text, tags)
    if form and not _parses(text):
        return form  # read as a document it fails on any server: only the form runs
    if form:
        tags.add(TAG_SOURCE)
    return [Payload(text), *form]


def _parses(text: str) -> bool:
    try:
        _parsed(text)
    except (GraphQLError, RecursionError):
        return False
    return True


CACHED_DOCUMENT_CHARS = 64 * 1024
"""Documents up to this size are parsed once per process (clients send the same few
query texts again and again); the parsed AST is never changed after parsing."""


@lru_cache(maxsize=512)
def _parsed_cached(text: str) -> DocumentNode:
    return parse(text, no_location=True, max_tokens=MAX_TOKENS)


def _parsed(text: str) -> DocumentNode:
    """graphql-core's parse (raises GraphQLSyntaxError, or RecursionError when nested
    beyond Python's stack)."""
    if len(text) <= CACHED_DOCUMENT_CHARS:
        return _parsed_cached(text)
    return parse(text, no_location=True, max_tokens=MAX_TOKENS)


def _form_payloads(text: str, tags: set[str]) -> list[Payload]:
    """``query=...`` form bodies (Rails reads them into the same params as JSON)."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return []
    values: dict[str, list[str]] = {}
    for key, value in pairs:
        values.setdefault(key, []).append(value)
    return _parameter_payloads(values, tags) if "query" in values else []


def _parameter_payloads(values: dict[str, list[str]], tags: set[str]) -> list[Payload]:
    """Payloads from URL or form parameters: each combination of repeated values."""
    choices: list[list[Any]] = []
    for key in _KEYS:
        given = values.get(key)
        if given and len(given) > 1:
            tags.add(TAG_DUPLICATE_PARAMETER)
        choices.append(list(dict.fromkeys(given)) if given else [None])
    return [Payload(q, o, v, parameters=True) for q, o, v in product(*choices)]


def _merged(first: Payload, second: Payload) -> Payload:
    """``first``'s members, ``second``'s where ``first`` has none."""
    variables = first if first.variables is not None else second
    return Payload(
        first.query if first.query is not None else second.query,
        first.operation_name if first.operation_name is not None else second.operation_name,
        variables.variables,
        parameters=variables.parameters,
    )


def _payload_key(payload: Payload) -> str:
    members = [
        payload.query,
        payload.operation_name,
        payload.variables,
        payload.error,
        payload.parameters,
    ]
    return json.dumps(members, sort_keys=True, default=repr)


def payloads_of(request: HttpRequest) -> tuple[list[Payload], set[str]]:
    """Every GraphQL request the HTTP request may stand for, and the ambiguity tags.

    With parameters in both the URL and the body, the body alone, the URL alone and
    both merged either way are all readings (how a server combines them is its own
    business: Rails merges them, express-graphql reads the URL for GET only).
    """
    tags: set[str] = set()
    in_url = [k for k in _KEYS if k in request.query_values]
    url = _parameter_payloads(request.query_values, tags) if in_url else []
    body = _body_payloads(request, tags)
    if body is None:
        found = url or [Payload(None, error="no GraphQL query in the request")]
    elif not url:
        found = body
    else:
        tags.add(TAG_SOURCE)
        found = []
        for b, u in product(body, url):
            found += [b, u, _merged(b, u), _merged(u, b)]
    # A reading with no query at all runs nothing; it matters only when no reading has one.
    with_query = [p for p in found if p.query is not None or p.error]
    if not with_query:
        return [Payload(None, error="no GraphQL query in the request")], tags
    unique: dict[str, Payload] = {}
    for payload in with_query:
        unique.setdefault(_payload_key(payload), payload)
    if len(unique) > MAX_READINGS:
        return [Payload(None, error="too many readings")], tags
    return list(unique.values()), tags


# ------------------------------------------------------------------ payload -> executions


def _variable_sets(payload: Payload, tags: set[str]) -> list[dict[str, Any]]:
    """The provided variables each reading uses (``{}``: none provided)."""
    variables = payload.variables
    if variables is None:
        return [{}]
    if isinstance(variables, dict):
        return [variables]
    if isinstance(variables, str) and payload.parameters:
        # GraphQL over HTTP: in URL (and form) parameters, variables are JSON text.
        readings = json_readings(variables)
        if readings is not None and all(isinstance(v, dict) for v in readings[0]):
            if readings[1]:
                tags.add(TAG_DUPLICATE_KEY)
            return readings[0]
    if isinstance(variables, str):
        # Many servers (graphql-ruby's generated controller among them) parse a string;
        # others reject or ignore it. Both the parsed and the absent reading are decided.
        tags.add(TAG_VARIABLES)
        if not variables.strip():
            return [{}]
        readings = json_readings(variables)
        if readings is None:
            return [{}]
        values, repeated = readings
        if repeated:
            tags.add(TAG_DUPLICATE_KEY)
        return [*(v for v in values if isinstance(v, dict)), {}]
    tags.add(TAG_VARIABLES)
    return [{}]


def _operations(document: DocumentNode) -> list[OperationDefinitionNode]:
    return [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]


def _selected(
    document: DocumentNode, operation_name: Any, tags: set[str]
) -> list[OperationDefinitionNode]:
    """The operation the server runs (GetOperation), or every one when that is a request
    error (then nothing runs on a conforming server; see the module docstring)."""
    operations = _operations(document)
    if operation_name is not None and not isinstance(operation_name, str):
        tags.add(TAG_OPERATION)
        return operations
    chosen = get_operation_ast(document, operation_name)
    named = [o for o in operations if o.name and o.name.value == operation_name]
    if chosen is None or (operation_name is not None and len(named) != 1):
        tags.add(TAG_OPERATION)
        return operations
    return [chosen]


def _coerced_variables(
    operation: OperationDefinitionNode, provided: dict[str, Any]
) -> dict[str, Any]:
    """CoerceVariableValues, untyped: the provided value when given (null included),
    else the default; variables the operation does not declare do not exist."""
    values: dict[str, Any] = {}
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        if name in provided:
            values[name] = provided[name]
        elif definition.default_value is not None:
            values[name] = value_from_ast_untyped(definition.default_value)
    return values


class _UnreadableError(ValueError):
    """A document a conforming server rejects, which we decline to guess about."""


def _check_unique(arguments: list[ArgumentNode] | tuple[ArgumentNode, ...]) -> None:
    names = [a.name.value for a in arguments]
    if len(set(names)) != len(names):
        raise _UnreadableError("an argument is given twice")
    for argument in arguments:
        _check_unique_value(argument.value)


def _check_unique_value(value: ValueNode) -> None:
    if isinstance(value, ObjectValueNode):
        names = [f.name.value for f in value.fields]
        if len(set(names)) != len(names):
            raise _UnreadableError("an input object field is given twice")
        for member in value.fields:
            _check_unique_value(member.value)
    elif isinstance(value, ListValueNode):
        for item in value.values:
            _check_unique_value(item)


def _defined(value: Any) -> Any:
    """A resolved value without ``Undefined`` (an absent variable): object members
    dropped, list items null, as input coercion does."""
    if isinstance(value, dict):
        return {k: _defined(v) for k, v in value.items() if v is not Undefined}
    if isinstance(value, list):
        return [None if v is Undefined else _defined(v) for v in value]
    return value


def _collect(
    selection_set: SelectionSetNode,
    fragments: dict[str, list[FragmentDefinitionNode]],
    visited: set[str],
    out: dict[str, list[FieldNode]],
) -> None:
    """CollectFields without directives: root fields by response key, in order."""
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            key = selection.alias.value if selection.alias else selection.name.value
            out.setdefault(key, []).append(selection)
        elif isinstance(selection, InlineFragmentNode):
            _collect(selection.selection_set, fragments, visited, out)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in visited:
                continue
            found = fragments.get(name)
            if not found:
                raise _UnreadableError(f"fragment {name} is not defined")
            visited.add(name)
            for fragment in found:  # a name defined twice is invalid: decide both
                _collect(fragment.selection_set, fragments, visited, out)


def _root_fields(
    document: DocumentNode, operation: OperationDefinitionNode, provided: dict[str, Any]
) -> tuple[RootField, ...]:
    fragments: dict[str, list[FragmentDefinitionNode]] = {}
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            fragments.setdefault(definition.name.value, []).append(definition)
    grouped: dict[str, list[FieldNode]] = {}
    _collect(operation.selection_set, fragments, set(), grouped)
    variables = _coerced_variables(operation, provided)
    kind = operation.operation.value
    fields: list[RootField] = []
    for key, nodes in grouped.items():
        seen: list[tuple[str, dict[str, Any]]] = []
        for node in nodes:
            name = node.name.value
            if name.startswith("__"):
                continue  # introspection (__typename): reserved names, never a mutation
            _check_unique(node.arguments or ())
            arguments = {
                a.name.value: _defined(value_from_ast_untyped(a.value, variables))
                for a in node.arguments or ()
            }
            arguments = {k: v for k, v in arguments.items() if v is not Undefined}
            # Same response key, same field and arguments: executed once (merged). A
            # conflicting one is invalid; both are decided.
            if (name, arguments) not in seen:
                seen.append((name, arguments))
                fields.append(RootField(kind, name, key, arguments))
    return tuple(fields)


def execute_payload(payload: Payload, tags: set[str]) -> list[Execution]:
    """The executions one payload may perform (one per operation and variables reading)."""
    if payload.error:
        return [Execution(error=payload.error)]
    if not isinstance(payload.query, str):
        return [Execution(error="no query string")]
    try:
        document = _parsed(payload.query)
    except GraphQLError as exc:
        return [Execution(error=f"unparseable document: {exc.message}")]
    except RecursionError:
        return [Execution(error="document nested too deeply")]
    operations = _selected(document, payload.operation_name, tags)
    if not operations:
        return [Execution(error="no operation in the document")]
    executions: list[Execution] = []
    for operation in operations:
        for provided in _variable_sets(payload, tags):
            try:
                fields = _root_fields(document, operation, provided)
            except (_UnreadableError, RecursionError) as exc:
                executions.append(Execution(error=str(exc) or "document nested too deeply"))
                continue
            executions.append(Execution(operation.operation.value, fields))
    return _dedupe(iter(executions))


def _hashable(execution: Execution) -> tuple[str, Execution]:
    fields = [(f.name, f.response_key, f.arguments) for f in execution.fields]
    key = json.dumps([execution.operation, execution.error, fields], sort_keys=True, default=str)
    return key, execution


def _dedupe(executions: Iterator[Execution]) -> list[Execution]:
    return list(dict(_hashable(e) for e in executions).values())


def read_graphql(request: HttpRequest) -> GraphQLReading:
    """Every execution any reading of ``request`` may perform."""
    bare = not request.body and not any(k in request.query_values for k in _KEYS)
    if bare and request.method.upper() in ("GET", "HEAD"):
        # GitHub's docs ("Forming calls with GraphQL"): a plain GET to the endpoint is
        # the introspection query, a read.
        return GraphQLReading([Execution("query")])
    payloads, tags = payloads_of(request)
    executions = _dedupe(e for p in payloads for e in execute_payload(p, tags))
    return GraphQLReading(executions, tags)

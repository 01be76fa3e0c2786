"""The SQL-over-HTTP recogniser: statements sent through HTTP carriers -> Actions.

Carriers (``service``) and who reads their SQL:

* PostgreSQL: Neon's serverless driver (``POST /sql``), the Supabase SQL endpoints
  (``/pg/query``, the Management API's ``/v1/projects/<ref>/database/query``): pglast,
  PostgreSQL's own parser (``postgres.py``);
* PostgREST / Supabase ``/rest/v1/<table>`` and ``/rest/v1/rpc/<function>``: PostgREST's
  own path and query-string rules (``postgrest.py``);
* BigQuery (``jobs.query``, ``jobs.insert``), the Snowflake SQL API and Databricks
  statement execution: sqlglot in the product's dialect (``dialects.py``); BigQuery
  job configurations that write tables are read too (:func:`_bigquery_job`).

Every statement of a request is an operation: the most dangerous one is the action, the
others are its readings (``Action.readings``), each classified in full, so the engine
decides every one and the strictest outcome applies. SQL the parser cannot read is an
``unknown`` operation (the bundle's ``unclassified`` decision), never a read. A JSON body
that gives a field twice (``{"query": "select 1", "query": "drop table x"}``) is read with
every value, tagged ``ambiguous:duplicate-key``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from guardproxy.action import Action, Confidence, Provider, Resource, Scope, Verb
from guardproxy.hosts import canonical_host
from guardproxy.recognise.common import actor_of, cap, decoded_body, resource_key, summary_of
from guardproxy.recognise.providers.sql.dialects import read_dialect
from guardproxy.recognise.providers.sql.postgres import PostgresReader
from guardproxy.recognise.providers.sql.postgrest import POSTGREST_PATH, postgrest_parts
from guardproxy.recognise.providers.sql.statement import Part, SqlError, ordered
from guardproxy.recognise.request import HttpRequest

__all__ = ["SqlError", "carrier", "looks_like_sql", "read_parts", "recognise_sql"]

_BIGQUERY = re.compile(r"^/bigquery/v2/projects/(?P<project>[^/]+)/(?P<kind>queries|jobs)/?$")
_SUPABASE_QUERY = re.compile(r"^/v1/projects/[^/]+/database/query$|/pg/query$")
_DATABRICKS = "/api/2.0/sql/statements"
_POSTGREST_HEADERS = ("apikey", "x-client-info", "accept-profile", "content-profile")
_POSTGRES_CARRIERS = frozenset({"neon", "supabase", "postgrest"})
_DUPLICATE = "ambiguous:duplicate-key"
_MAX_OPERATIONS = 256
"""Distinct operations one request may carry before it is refused as unclassified (each
is decided on its own; past this a request is more likely an attack on the guard)."""


def carrier(request: HttpRequest) -> str:
    """The SQL carrier a request uses, or ``""``."""
    host = canonical_host(request.host)
    path = request.path_only.rstrip("/") or "/"
    method = request.method.upper()
    if path == "/sql" and (host.endswith(".neon.tech") or request.header("neon-connection-string")):
        return "neon"
    if POSTGREST_PATH.match(path):
        if host.endswith((".supabase.co", ".supabase.in")):
            return "supabase"
        # /rest/v1/ alone is too common; supabase-js and postgrest-js mark their requests.
        if any(request.header(h) for h in _POSTGREST_HEADERS):
            return "postgrest"
    if method == "POST" and _SUPABASE_QUERY.search(path):
        return "supabase"
    if path == "/api/v2/statements" and host.endswith(".snowflakecomputing.com"):
        return "snowflake"
    if path == "/queries/v1/query-request" and host.endswith(".snowflakecomputing.com"):
        return "snowflake"
    if path == _DATABRICKS and method == "POST":
        return "databricks"
    bigquery = host in ("bigquery.googleapis.com", "www.googleapis.com")
    if bigquery and method == "POST" and _BIGQUERY.match(path):
        return "bigquery"
    return ""


def looks_like_sql(request: HttpRequest) -> bool:
    """Neon ``/sql``, Supabase/PostgREST ``/rest/v1/``, Supabase SQL, the Snowflake SQL
    API, Databricks statement execution, BigQuery queries and query jobs."""
    return carrier(request) != ""


# ------------------------------------------------------------------ JSON bodies


class _Object(dict[str, list[Any]]):
    """A JSON object with every value of every key (a key given twice keeps both)."""


def _every_value(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    for key, value in pairs:
        obj.setdefault(key, []).append(value)
    return obj


def _values(node: Any, key: str) -> list[Any]:
    return node.get(key, []) if isinstance(node, _Object) else []


def _duplicated(node: Any) -> bool:
    if isinstance(node, _Object):
        return any(len(v) > 1 or any(_duplicated(i) for i in v) for v in node.values())
    if isinstance(node, list):
        return any(_duplicated(i) for i in node)
    return False


def _json(request: HttpRequest) -> Any:
    content_type = request.header("content-type").lower()
    if content_type and "json" not in content_type:
        raise SqlError("body is not JSON")
    body = decoded_body(request)
    if body is None:
        raise SqlError("body too large or undecodable")
    try:
        return json.loads(body, object_pairs_hook=_every_value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SqlError("body is not JSON") from exc


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SqlError("no SQL text")
    return value


def _texts(node: Any, *keys: str) -> list[str]:
    return [_string(v) for key in keys for v in _values(node, key)]


def _neon_texts(body: Any) -> list[str]:
    """@neondatabase/serverless (src/httpQuery.ts, ``execute``) sends ``{query, params}``
    for one query and ``{queries: [{query, params}, ...]}`` for a transaction batch."""
    batches = [body] if isinstance(body, list) else _values(body, "queries")
    texts = _texts(body, "query")
    for batch in batches:
        if not isinstance(batch, list) or not batch:
            raise SqlError("bad Neon batch")
        for item in batch:
            found = _texts(item, "query")
            if not found:
                raise SqlError("Neon batch item without a query")
            texts.extend(found)
    return texts


# ------------------------------------------------------------------ BigQuery

_WRITES = {
    "WRITE_TRUNCATE": (Verb.DELETE, ("truncate", "overwrite")),
    "WRITE_TRUNCATE_DATA": (Verb.DELETE, ("truncate", "overwrite")),
    "WRITE_APPEND": (Verb.CREATE, ()),
    "WRITE_EMPTY": (Verb.CREATE, ()),
}
_DEFAULT_WRITE = {"query": "WRITE_EMPTY", "load": "WRITE_APPEND", "copy": "WRITE_EMPTY"}


def _table_reference(node: Any) -> str:
    """``project.dataset.table`` of a BigQuery TableReference (every value given)."""
    if not isinstance(node, _Object):
        return ""
    parts = []
    for key in ("projectId", "datasetId", "tableId"):
        values = [v for v in _values(node, key) if isinstance(v, str)]
        parts.append("|".join(dict.fromkeys(values)))
    return ".".join(p for p in parts if p)


def _destination_parts(config: Any, kind: str) -> list[Part]:
    """What a job does to its ``destinationTable``, by ``writeDisposition``
    (JobConfigurationQuery/Load/TableCopy in the BigQuery v2 API: WRITE_TRUNCATE
    replaces the table's data; the default is WRITE_EMPTY for queries and copies,
    WRITE_APPEND for loads)."""
    destinations = [_table_reference(d) for d in _values(config, "destinationTable")]
    if not destinations:
        return []
    dispositions = _values(config, "writeDisposition") or [_DEFAULT_WRITE[kind]]
    parts: list[Part] = []
    for destination in destinations:
        for disposition in dispositions:
            effect = _WRITES.get(str(disposition).upper())
            if effect is None:
                tags: tuple[str, ...] = ("unclassified-disposition",)
                parts.append(
                    Part(str(disposition)[:40], Verb.UNKNOWN, "sql:table", destination, tags)
                )
                continue
            verb, tags = effect
            parts.append(Part(str(disposition).upper(), verb, "sql:table", destination, tags))
    return parts


def _bigquery_sql(text: str, legacy_values: list[Any]) -> list[Part]:
    """GoogleSQL through sqlglot. ``useLegacySql`` defaults to true in the v2 API (and a
    project can default to legacy SQL); legacy SQL runs queries only ("DDL and DML
    statements are only supported using GoogleSQL", cloud.google.com/bigquery/
    sql-reference), so text sqlglot cannot read is a read when it may be legacy SQL."""
    head = text.lstrip()[:12].lower()
    legacy = head.startswith("#legacysql") or (
        not head.startswith("#standardsql") and any(v is not False for v in legacy_values or [None])
    )
    try:
        return read_dialect(text, "bigquery")
    except SqlError:
        if legacy:
            return [Part("SELECT", Verb.READ, tags=("legacy-sql",))]
        raise


def _bigquery(request: HttpRequest, body: Any) -> tuple[list[Part], bool]:
    """(parts, dry run) of ``jobs.query`` (a QueryRequest) or ``jobs.insert`` (a Job)."""
    found = _BIGQUERY.match(request.path_only.rstrip("/"))
    if found and found.group("kind") == "queries":
        parts = _sql_parts(
            lambda t: _bigquery_sql(t, _values(body, "useLegacySql")), _texts(body, "query")
        )
        return parts, _all_true(_values(body, "dryRun"))
    parts = []
    dry_runs: list[Any] = []
    for configuration in _values(body, "configuration"):
        parts.extend(_bigquery_job(configuration))
        dry_runs.extend(_values(configuration, "dryRun"))
    if not parts:
        raise SqlError("BigQuery job without a configuration")
    return parts, _all_true(dry_runs)


def _bigquery_job(configuration: Any) -> list[Part]:
    parts: list[Part] = []
    for query in _values(configuration, "query"):
        legacy = _values(query, "useLegacySql")
        parts.extend(
            _sql_parts(lambda t, legacy=legacy: _bigquery_sql(t, legacy), _texts(query, "query"))
        )
        parts.extend(_destination_parts(query, "query"))
    for load in _values(configuration, "load"):
        parts.extend(_destination_parts(load, "load") or [Part("LOAD", Verb.UNKNOWN)])
    for copy in _values(configuration, "copy"):
        operation = [str(o).upper() for o in _values(copy, "operationType")]
        found = _destination_parts(copy, "copy") or [Part("COPY", Verb.UNKNOWN)]
        parts.extend(p.tagged(*(o.lower() for o in operation)) for p in found)
    for extract in _values(configuration, "extract"):
        sources = [_table_reference(s) for s in _values(extract, "sourceTable")] or [""]
        parts.extend(Part("EXTRACT", Verb.READ, "sql:table", s, ("export",)) for s in sources)
    known = {"query", "load", "copy", "extract", "dryRun", "jobTimeoutMs", "labels", "jobType"}
    if isinstance(configuration, _Object) and set(configuration) - known:
        unknown = sorted(set(configuration) - known)[0]
        parts.append(Part(unknown[:40], Verb.UNKNOWN, tags=("unclassified-job",)))
    return parts


def _all_true(values: list[Any]) -> bool:
    return bool(values) and all(v is True for v in values)


# ------------------------------------------------------------------ reading


def _sql_parts(read: Any, texts: list[str]) -> list[Part]:
    """Each text read with ``read``; a text the parser refuses is one unknown part."""
    parts: list[Part] = []
    for text in texts:
        try:
            parts.extend(read(text))
        except SqlError:
            parts.append(Part("UNPARSED", Verb.UNKNOWN, tags=("parse-error",)))
    return parts


def read_parts(service: str, request: HttpRequest) -> tuple[list[Part], str, list[str], bool]:
    """(parts, project, ambiguity tags, dry run) of a carrier request."""
    if service in ("supabase", "postgrest"):
        found = POSTGREST_PATH.match(request.path_only.rstrip("/"))
        if found:
            return postgrest_parts(request, found.group("rest")), "", [], False
    body = _json(request)
    ambiguity = [_DUPLICATE] if _duplicated(body) else []
    if service == "bigquery":
        found = _BIGQUERY.match(request.path_only.rstrip("/"))
        project = found.group("project") if found else ""
        parts, dry_run = _bigquery(request, body)
        return parts, project, ambiguity, dry_run
    if not isinstance(body, _Object) and not (service == "neon" and isinstance(body, list)):
        raise SqlError("body is not a JSON object")
    if service in _POSTGRES_CARRIERS:
        texts = _neon_texts(body) if service == "neon" else _texts(body, "query")
        if not texts:
            raise SqlError("no SQL text")
        reader = PostgresReader()
        parts = _sql_parts(reader.read, texts)
        return parts, "", [*ambiguity, *dict.fromkeys(reader.ambiguity)], False
    keys = ("statement", "sqlText") if service == "snowflake" else ("statement",)
    texts = _texts(body, *keys)
    if not texts:
        raise SqlError("no SQL text")
    return _sql_parts(lambda t: read_dialect(t, service), texts), "", ambiguity, False


def _bounded(parts: list[Part]) -> list[Part]:
    """At most ``_MAX_OPERATIONS`` distinct operations: reads go first, then the request
    is one unknown operation (never a silent cut of what it does)."""
    if len(parts) <= _MAX_OPERATIONS:
        return parts
    changing = [p for p in parts if p.verb is not Verb.READ]
    if len(changing) <= _MAX_OPERATIONS:
        return changing
    return [Part("TOO MANY STATEMENTS", Verb.UNKNOWN, tags=("too-many-statements",))]


def recognise_sql(request: HttpRequest) -> Action:
    """The Action for a SQL-over-HTTP request: its most dangerous operation, every other
    operation as a reading."""
    service = carrier(request)
    if not service:
        raise SqlError("not a SQL carrier")
    parts, project, ambiguity, dry_run = read_parts(service, request)
    if not parts:
        raise SqlError("no SQL statement")
    operations = _bounded(ordered(parts))
    actor = actor_of(request)
    summary = summary_of(request)
    key_scope = [canonical_host(request.host), *([project] if project else [])]

    def action(part: Part) -> Action:
        name, truncated = cap(part.name)
        if part.verb is Verb.UNKNOWN:
            confidence = Confidence.UNKNOWN
        else:
            confidence = Confidence.AMBIGUOUS if ambiguity else Confidence.EXACT
        return Action(
            provider=Provider.SQL,
            service=service,
            operation=part.operation,
            verb=part.verb,
            resource=Resource(
                type=part.rtype,
                name=name,
                key=resource_key("sql", key_scope, part.rtype, name),
            ),
            scope=Scope(project=project),
            risk_tags=sorted({*part.tags, *ambiguity}),
            actor=actor,
            request=summary,
            confidence=confidence,
            dry_run=dry_run,
            truncated=truncated,
        )

    first, *rest = operations
    main = action(first)
    if not rest:
        return main
    return main.model_copy(update={"readings": [action(p) for p in rest]})

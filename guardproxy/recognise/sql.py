"""The SQL-over-HTTP recogniser: statements sent through HTTP carriers -> Actions.

Carriers (``service``): Neon's serverless driver (``POST /sql``), Supabase and
PostgREST (``/rest/v1/<table>``, where the HTTP verb *is* the SQL verb and a missing
filter means every row), the Supabase Management API's SQL endpoint, the Snowflake
SQL API, Databricks statement execution and BigQuery queries/jobs.

The SQL is classified by a deliberately small tokenizer rather than a parser:
comments and string literals are removed first (so ``'; DROP TABLE x'`` inside a
literal is data, not a statement), statements are split on ``;`` outside them, and
each statement is named by its leading keywords (``DROP DATABASE``, ``DELETE``).
The most dangerous statement names the action; a statement the tokenizer cannot
name makes the whole action ``unknown`` (fail closed), since one hidden statement
is all it takes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from guardproxy.action import Action, Confidence, Provider, Resource, Scope, Verb
from guardproxy.recognise.common import actor_of, cap, decoded_body, resource_key, summary_of
from guardproxy.recognise.request import HttpRequest


class SqlError(ValueError):
    """SQL text or a carrier body the recogniser cannot read."""


# ------------------------------------------------------------------ tokenizer

_IDENT = r'(?:"(?:[^"]|"")*"|`[^`]*`|\[[^\]\n]*\]|[A-Za-z_][\w$]*)'
_TOKEN = re.compile(
    rf"(?P<ws>\s+)|(?P<name>{_IDENT}(?:\s*\.\s*{_IDENT})*)|(?P<num>\d[\w.]*)"
    r"|(?P<op><>|!=|<=|>=|::|[();,=*.<>+\-/%|&^~!@#?:{}\[\]$])"
)
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_]\w*)?\$")


class Token(str):
    """A token compared in upper case that remembers how it was spelt (for names)."""

    raw: str

    def __new__(cls, raw: str) -> Token:
        quoted = raw[:1] in ('"', "`", "[") or "." in raw
        token = super().__new__(cls, raw if quoted else raw.upper())
        token.raw = raw
        return token


def _skip_string(text: str, start: int, backslash: bool) -> int:
    """Index after the literal opening at ``start`` (``''`` escapes; ``\\'`` too if
    ``backslash``, as in MySQL, BigQuery, Databricks or a Postgres ``E'...'``)."""
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and backslash:
            i += 2
            continue
        if char == "'":
            if text.startswith("''", i):
                i += 2
                continue
            return i + 1
        i += 1
    raise SqlError("unterminated string literal")


def _skip_block_comment(text: str, start: int) -> int:
    depth, i = 0, start
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise SqlError("unterminated comment")


def statements(text: str, *, backslash: bool = False) -> list[list[str]]:
    """Token lists of the statements in ``text``; literals become ``'?'``.

    Tokens compare upper-cased (:class:`Token`); names keep their spelling. Whether a
    backslash escapes a quote depends on the dialect and its settings, which the wire
    does not tell: :func:`judge` reads the text both ways.
    """
    out: list[list[str]] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if text.startswith("--", i) or (char == "#" and not current):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end + 1
            continue
        if text.startswith("/*", i):
            i = _skip_block_comment(text, i)
            continue
        if char == "'" or (char in "eEnNbBxX" and text.startswith("'", i + 1)):
            escaped = backslash or char in "eE"
            i = _skip_string(text, i + (char != "'"), escaped)
            current.append("'?'")
            continue
        if char == "$":
            tag = _DOLLAR_TAG.match(text, i)
            if tag:
                end = text.find(tag.group(), tag.end())
                if end < 0:
                    raise SqlError("unterminated dollar-quoted string")
                i = end + len(tag.group())
                current.append("'?'")
                continue
        if char == ";":
            if current:
                out.append(current)
            current = []
            i += 1
            continue
        found = _TOKEN.match(text, i)
        if found is None:
            raise SqlError(f"unexpected character {char!r}")
        i = found.end()
        if found.lastgroup == "ws":
            continue
        token = found.group()
        if found.lastgroup == "name":
            token = re.sub(r"\s+", "", token)
        current.append(Token(token))
    if current:
        out.append(current)
    return out


# ------------------------------------------------------------------ classifier

_READ_KINDS = frozenset(
    {"SELECT", "VALUES", "SHOW", "DESCRIBE", "DESC", "USE", "LIST", "TABLE", "FETCH"}
)
_CONTROL_KINDS = frozenset(
    {"BEGIN", "COMMIT", "ROLLBACK", "START", "END", "SET", "RESET", "SAVEPOINT", "RELEASE"}
)
_CONTAINERS = {"DATABASE": "database", "SCHEMA": "schema", "CATALOG": "database"}
_DROP_DESTROYS = frozenset({"DATABASE", "SCHEMA", "CATALOG", "TABLE"})
_PERMISSION_OBJECTS = frozenset({"USER", "ROLE", "GROUP", "POLICY"})
_OBJECT_PREFIXES = frozenset(
    {"TEMPORARY", "TEMP", "EXTERNAL", "MATERIALIZED", "TRANSIENT", "UNIQUE", "GLOBAL", "LOCAL"}
)
_OBJECT_PREFIXES |= {"UNLOGGED", "SECURE", "RECURSIVE", "STREAMING", "FOREIGN", "VOLATILE"}
_CREATE_SKIP = frozenset({"OR", "REPLACE", "IF", "NOT", "EXISTS"}) | _OBJECT_PREFIXES
_SEVERITY = {
    Verb.DESTROY: 7,
    Verb.DELETE: 6,
    Verb.PERMISSION: 5,
    Verb.EXECUTE: 4,
    Verb.UPDATE: 3,
    Verb.CREATE: 2,
    Verb.READ: 1,
}


@dataclass
class Statement:
    """One classified statement."""

    kind: str
    verb: Verb
    rtype: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)


def _name(token: str) -> str:
    """A name without its quoting: ``"Orders"`` -> ``Orders``, ``a.b`` kept dotted."""
    raw = token.raw if isinstance(token, Token) else token
    return ".".join(p.strip('"`[]') for p in raw.split("."))


def _is_name(token: str) -> bool:
    return bool(token) and (token[0] in '"`[' or token[0].isalpha() or token[0] == "_")


def _depth0(tokens: list[str]) -> list[str]:
    """The tokens outside parentheses (a WHERE in a subquery does not filter the DML)."""
    depth, out = 0, []
    for token in tokens:
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0:
            out.append(token)
    return out


def _filters(tokens: list[str]) -> bool:
    """Whether a DML statement has a WHERE at depth 0 that is not trivially true."""
    top = _depth0(tokens)
    if "WHERE" not in top:
        return False
    condition = top[top.index("WHERE") + 1 :]
    for stop in ("RETURNING", "ORDER", "LIMIT"):
        if stop in condition:
            condition = condition[: condition.index(stop)]
    trivial = condition == ["TRUE"] or (
        len(condition) == 3 and condition[1] == "=" and condition[0] == condition[2]
    )
    return not trivial


def _after(tokens: list[str], start: int, skip: frozenset[str]) -> str:
    """The first name at or after ``start`` that is not one of ``skip``."""
    for token in tokens[start:]:
        if token not in skip and _is_name(token):
            return _name(token)
    return ""


def _dml(kind: str, tokens: list[str]) -> Statement:
    skip = frozenset({"FROM", "ONLY", "INTO", "IGNORE", "LOW_PRIORITY", "QUICK", "OVERWRITE"})
    name = _after(tokens, 1, skip | {"TABLE"})
    verb = {"DELETE": Verb.DELETE, "UPDATE": Verb.UPDATE}.get(kind, Verb.CREATE)
    statement = Statement(kind, verb, "sql:table", name)
    if kind in ("DELETE", "UPDATE") and not _filters(tokens):
        statement.tags.append("delete-without-where")
        if kind == "UPDATE":
            statement.tags.append("update-without-where")
    if kind == "INSERT" and "OVERWRITE" in tokens[:3]:  # Databricks/Hive INSERT OVERWRITE
        statement.verb, statement.tags = Verb.DELETE, ["truncate"]
    return statement


def _object_kind(tokens: list[str], start: int) -> tuple[str, int]:
    """The object type after DROP/CREATE/ALTER (``TABLE``, ``MATERIALIZED VIEW``)."""
    i = start
    while i < len(tokens) and tokens[i] in _CREATE_SKIP:
        i += 1
    if i >= len(tokens):
        raise SqlError("statement without an object type")
    kind = tokens[i]
    if i > start and tokens[i - 1] == "MATERIALIZED":
        kind = "MATERIALIZED " + kind
    return kind, i + 1


def _drop(tokens: list[str]) -> Statement:
    obj, i = _object_kind(tokens, 1)
    rtype = "sql:" + _CONTAINERS.get(obj, obj.lower().replace(" ", "-"))
    names = [_name(t) for t in _depth0(tokens[i:]) if _is_name(t) and t not in ("IF", "EXISTS")]
    names = [n for n in names if n.upper() not in ("CASCADE", "RESTRICT", "PURGE")]
    if obj in _PERMISSION_OBJECTS:
        verb = Verb.PERMISSION
    else:
        verb = Verb.DESTROY if obj in _DROP_DESTROYS else Verb.DELETE
    statement = Statement(f"DROP {obj}", verb, rtype, names[0] if names else "")
    if len(names) > 1:
        statement.tags.append("bulk")
    if "CASCADE" in tokens:
        statement.tags.append("cascade")
    return statement


def _create(tokens: list[str]) -> Statement:
    obj, i = _object_kind(tokens, 1)
    rtype = "sql:" + _CONTAINERS.get(obj, obj.lower().replace(" ", "-"))
    name = _after(tokens, i, frozenset({"IF", "NOT", "EXISTS"}))
    statement = Statement(f"CREATE {obj}", Verb.CREATE, rtype, name)
    if obj in _PERMISSION_OBJECTS:
        statement.verb = Verb.PERMISSION
    elif tokens[1:3] == ["OR", "REPLACE"]:
        # Replacing a table (or schema, database) drops the one that was there, data and all.
        statement.verb = Verb.DESTROY if obj in _DROP_DESTROYS else Verb.UPDATE
        statement.tags.append("replace")
    return statement


def _alter(tokens: list[str]) -> Statement:
    obj, i = _object_kind(tokens, 1)
    rtype = "sql:" + _CONTAINERS.get(obj, obj.lower().replace(" ", "-"))
    name = _after(tokens, i, frozenset({"IF", "EXISTS", "ONLY"}))
    statement = Statement(f"ALTER {obj}", Verb.UPDATE, rtype, name)
    top = _depth0(tokens[i:])
    if obj in _PERMISSION_OBJECTS or "OWNER" in top:
        statement.verb = Verb.PERMISSION
    elif "DROP" in top:
        dropped = top[top.index("DROP") + 1 : top.index("DROP") + 2]
        if dropped == ["PARTITION"]:
            statement.tags.append("drop-partition")
        elif dropped and dropped[0] not in ("CONSTRAINT", "DEFAULT", "NOT", "IDENTITY"):
            statement.tags.append("drop-column")  # DROP [COLUMN] name: its data goes too
    return statement


def classify_statement(tokens: list[str]) -> Statement:
    """The kind and verb class of one statement's tokens."""
    while tokens and tokens[0] == "(":
        tokens = tokens[1:]
    if not tokens:
        raise SqlError("empty statement")
    head = tokens[0]
    if head == "EXPLAIN":
        if "ANALYZE" in tokens[1:3] or "ANALYSE" in tokens[1:3]:
            return classify_statement(tokens[2:])  # EXPLAIN ANALYZE runs the statement
        return Statement("EXPLAIN", Verb.READ)
    if head in _READ_KINDS:
        top = _depth0(tokens)
        name = _after(top, top.index("FROM") + 1, frozenset()) if "FROM" in top else ""
        return Statement(head, Verb.READ, "sql:table" if name else "", name)
    if head in _CONTROL_KINDS:
        return Statement(head, Verb.READ)
    if head in ("INSERT", "UPDATE", "DELETE", "UPSERT", "REPLACE", "MERGE"):
        if head in ("UPSERT", "REPLACE", "MERGE"):
            # MERGE ... WHEN MATCHED THEN DELETE deletes rows.
            verb = Verb.DELETE if head == "MERGE" and "DELETE" in tokens else Verb.UPDATE
            return Statement(head, verb, "sql:table", _after(tokens, 1, _FROM_SKIP))
        return _dml(head, tokens)
    if head == "TRUNCATE":
        name = _after(tokens, 1, frozenset({"TABLE", "ONLY", "IF", "EXISTS"}))
        tags = ["truncate", *(["bulk"] if "," in _depth0(tokens) else [])]
        return Statement("TRUNCATE", Verb.DELETE, "sql:table", name, tags)
    if head == "DROP":
        return _drop(tokens)
    if head == "CREATE":
        return _create(tokens)
    if head == "ALTER":
        return _alter(tokens)
    if head in ("GRANT", "REVOKE", "DENY"):
        return Statement(head, Verb.PERMISSION)
    if head in ("CALL", "EXECUTE", "EXEC", "DO"):
        return Statement(head, Verb.EXECUTE, "sql:function", _after(tokens, 1, frozenset()))
    if head in ("COPY", "UNDROP", "VACUUM", "ANALYZE", "REFRESH", "OPTIMIZE", "COMMENT"):
        verb = Verb.READ if head == "COPY" and "TO" in _depth0(tokens) else Verb.UPDATE
        return Statement(head, Verb.CREATE if head == "UNDROP" else verb)
    if head == "WITH":
        return _with(tokens)
    raise SqlError(f"unknown statement kind {head[:20]!r}")


_FROM_SKIP = frozenset({"DISTINCT", "ALL", "INTO", "TABLE", "*"})
_DML_HEADS = ("INSERT", "UPDATE", "DELETE", "MERGE")


def _with(tokens: list[str]) -> Statement:
    """A WITH statement: judged by every DML inside it (Postgres CTEs may delete)."""
    starts = [i for i, t in enumerate(tokens) if t in _DML_HEADS or t == "SELECT"]
    parts = [classify_statement(tokens[i:]) for i in starts if tokens[i] in _DML_HEADS]
    return most_dangerous(parts) if parts else Statement("SELECT", Verb.READ)


def most_dangerous(parts: list[Statement]) -> Statement:
    return max(parts, key=lambda s: (_SEVERITY.get(s.verb, 8), bool(s.tags)))


@dataclass(frozen=True)
class Judgement:
    """What a body of SQL does, as a whole."""

    chosen: Statement
    tags: list[str]
    known: bool


def _readings(text: str) -> list[list[list[str]]]:
    """The statement lists ``text`` splits into with and without backslash escapes.

    A reading that does not even tokenize is one the server cannot be using; when
    both do, both are judged, so a quote that only one dialect escapes cannot hide a
    statement (``'a\\'; DROP TABLE x; --'``).
    """
    readings: list[list[list[str]]] = []
    for backslash in (False, True):
        try:
            readings.append(statements(text, backslash=backslash))
        except SqlError:
            continue
    if not readings:
        raise SqlError("SQL text does not tokenize")
    return readings


def judge(texts: list[str]) -> Judgement:
    """Classify every statement of ``texts``; the most dangerous one speaks for all."""
    parts: list[Statement] = []
    known = True
    destructive = 0
    for text in texts:
        most = 0
        for reading in _readings(text):
            count = 0
            for tokens in reading:
                try:
                    part = classify_statement(tokens)
                except SqlError:
                    known = False
                    continue
                parts.append(part)
                count += part.verb in (Verb.DELETE, Verb.DESTROY)
            most = max(most, count)
        destructive += most
    if not parts:
        raise SqlError("no statement")
    chosen = most_dangerous(parts)
    tags = {tag for part in parts for tag in part.tags}
    if destructive > 1:
        tags.add("bulk")
    return Judgement(chosen, sorted(tags), known)


# ------------------------------------------------------------------ carriers

_BIGQUERY = re.compile(r"^/bigquery/v2/projects/(?P<project>[^/]+)/(?P<kind>queries|jobs)/?$")
_SUPABASE_QUERY = re.compile(r"^/v1/projects/[^/]+/database/query$|/pg/query$")
_POSTGREST = re.compile(r"^/rest/v1/(?P<rpc>rpc/)?(?P<name>[^/]+)/?$")
_DATABRICKS = "/api/2.0/sql/statements"
_POSTGREST_HEADERS = ("apikey", "x-client-info", "accept-profile", "content-profile")
_POSTGREST_RESERVED = frozenset({"select", "order", "limit", "offset", "on_conflict", "columns"})


def carrier(request: HttpRequest) -> str:
    """The SQL carrier a request uses, or ``""``."""
    host = request.host.lower()
    path = request.path_only.rstrip("/") or "/"
    method = request.method.upper()
    if path == "/sql" and (host.endswith(".neon.tech") or request.header("neon-connection-string")):
        return "neon"
    if _POSTGREST.match(path):
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


def _json(request: HttpRequest) -> Any:
    content_type = request.header("content-type").lower()
    if content_type and "json" not in content_type:
        raise SqlError("body is not JSON")
    body = decoded_body(request)
    if body is None:
        raise SqlError("body too large or undecodable")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SqlError("body is not JSON") from exc


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SqlError("no SQL text")
    return value


def sql_texts(service: str, request: HttpRequest) -> tuple[list[str], str]:
    """(SQL texts, project) a carrier request sends."""
    body = _json(request)
    if service == "neon" and isinstance(body, list):
        body = {"queries": body}  # a bare array of queries: read it as a batch
    if not isinstance(body, dict):
        raise SqlError("body is not a JSON object")
    if service == "neon":
        batch = body.get("queries")
        if batch is not None:
            if not isinstance(batch, list) or not batch:
                raise SqlError("bad Neon batch")
            return [_string(q.get("query") if isinstance(q, dict) else None) for q in batch], ""
        return [_string(body.get("query"))], ""
    if service == "supabase":
        return [_string(body.get("query"))], ""
    if service == "snowflake":
        return [_string(body.get("statement", body.get("sqlText")))], ""
    if service == "databricks":
        return [_string(body.get("statement"))], ""
    found = _BIGQUERY.match(request.path_only.rstrip("/"))
    project = found.group("project") if found else ""
    if found and found.group("kind") == "queries":
        return [_string(body.get("query"))], project
    configuration = body.get("configuration")
    query = configuration.get("query") if isinstance(configuration, dict) else None
    if not isinstance(query, dict):
        raise SqlError("BigQuery job without a query")
    return [_string(query.get("query"))], project


def postgrest_statement(request: HttpRequest) -> Statement:
    """The statement a PostgREST request stands for: the HTTP verb is the SQL verb."""
    found = _POSTGREST.match(request.path_only.rstrip("/"))
    if found is None:
        raise SqlError("not a PostgREST path")
    name = found.group("name")
    method = request.method.upper()
    if found.group("rpc"):
        if method in ("GET", "HEAD"):  # PostgREST runs GET rpc in a read-only transaction
            return Statement("SELECT", Verb.READ, "sql:function", name)
        return Statement("CALL", Verb.EXECUTE, "sql:function", name)
    filtered = any(k not in _POSTGREST_RESERVED for k, _ in request.query)
    if method in ("GET", "HEAD"):
        return Statement("SELECT", Verb.READ, "sql:table", name)
    if method == "POST":
        return Statement("INSERT", Verb.CREATE, "sql:table", name)
    if method in ("PATCH", "PUT", "DELETE"):
        kind = "DELETE" if method == "DELETE" else "UPDATE"
        statement = Statement(kind, Verb.DELETE if kind == "DELETE" else Verb.UPDATE)
        statement.rtype, statement.name = "sql:table", name
        if not filtered:
            statement.tags.append("delete-without-where")
            if kind == "UPDATE":
                statement.tags.append("update-without-where")
        return statement
    raise SqlError(f"unexpected method {method[:10]!r}")


def recognise_sql(request: HttpRequest) -> Action:
    """The Action for a SQL-over-HTTP request."""
    service = carrier(request)
    if not service:
        raise SqlError("not a SQL carrier")
    project = ""
    if service in ("supabase", "postgrest") and _POSTGREST.match(request.path_only.rstrip("/")):
        statement = postgrest_statement(request)
        judgement = Judgement(statement, statement.tags, True)
    else:
        texts, project = sql_texts(service, request)
        judgement = judge(texts)
    chosen = judgement.chosen
    verb = chosen.verb if judgement.known else Verb.UNKNOWN
    name, truncated = cap(chosen.name)
    key_scope = [request.host.lower(), *([project] if project else [])]
    return Action(
        provider=Provider.SQL,
        service=service,
        operation=chosen.kind,
        verb=verb,
        resource=Resource(
            type=chosen.rtype,
            name=name,
            key=resource_key("sql", key_scope, chosen.rtype, name),
        ),
        scope=Scope(project=project),
        risk_tags=judgement.tags,
        actor=actor_of(request),
        request=summary_of(request),
        confidence=Confidence.EXACT if judgement.known else Confidence.UNKNOWN,
        truncated=truncated,
    )

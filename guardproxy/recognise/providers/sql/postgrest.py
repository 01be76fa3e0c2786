"""PostgREST (and Supabase's ``/rest/v1``) requests, read with PostgREST's own rules.

The HTTP verb is the SQL verb and the query string is the WHERE clause. The rules below
follow PostgREST's source (PostgREST/postgrest):

* the path (``src/library/PostgREST/ApiRequest.hs``, ``getResource``/``getAction``): the
  segments after the API prefix, each percent-decoded on its own (WAI's ``pathInfo``):
  ``[table]`` is a relation (GET/HEAD read, POST insert, PUT single-row upsert, PATCH
  update, DELETE delete), ``["rpc", name]`` a function (GET/HEAD/POST), anything else
  is refused;
* the query string (``src/library/PostgREST/ApiRequest/QueryParams.hs``, ``parse``, with
  http-types' ``parseQueryReplacePlus True``): pairs split on ``&`` *and* ``;``, ``+`` is
  a space, a key without ``=`` has no value and is ignored; ``select``, ``columns`` and
  ``on_conflict`` are reserved, and so is every key whose last dot-separated word is
  ``order``, ``limit``, ``offset``, ``and`` or ``or`` (``and``/``or`` are logic trees);
  every other key with a value is a filter, and it filters the root table only when its
  path has no embedded resource (``qsFiltersRoot``: ``id=eq.1``, not ``items.id=eq.1``);
  repeated keys are all applied (ANDed), so a repeat never loosens a filter;
* UPDATE and DELETE use the root filters and the logic trees
  (``src/library/PostgREST/Plan.hs``, ``mutatePlan``): with neither, the statement has
  no WHERE and reaches every row. A filter that matches every non-null value
  (``not.is.null``, ``like.*``) is a tautology, as ``id = id`` is in SQL;
* functions: PostgREST runs GET/HEAD calls (and calls of STABLE/IMMUTABLE functions) in a
  read-only transaction (``callReadPlan``, ``txMode``), which still lets a function
  terminate backends, write through dblink or run ``COPY ... TO PROGRAM``; the body of the
  function is not in the request, so every call is an ``execute``;
* ``Prefer: tx=rollback`` is honoured only when the server's ``db-tx-end`` allows an
  override (``src/library/PostgREST/Config.hs``), which the request cannot show: it is
  not taken as a dry run. ``Prefer: resolution=merge-duplicates`` makes a POST an
  upsert (``mutatePlan``, ``MutationCreate`` with ``preferResolution``);
* ``Content-Profile`` (POST, PUT, PATCH, DELETE) or ``Accept-Profile`` (other methods)
  names the schema (``getSchema``).
"""

from __future__ import annotations

import re

from guardproxy.action import Verb
from guardproxy.recognise.providers.sql.statement import TAUTOLOGY, Part, SqlError, unfiltered_tags
from guardproxy.recognise.request import HttpRequest

__all__ = ["POSTGREST_PATH", "postgrest_parts", "query_pairs"]

POSTGREST_PATH = re.compile(r"^/rest/v1/(?P<rest>.+)$")
_RESERVED = frozenset({"select", "columns", "on_conflict"})
_RESERVED_EMBEDDABLE = frozenset({"order", "limit", "offset", "and", "or"})
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_MUTATIONS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Filters every non-null row passes: `not.is.null`, `is.not_null`, `like.*`, `ilike.*`.
_ALL_ROWS = re.compile(r"^(?:not\.is\.null|is\.not_null|(?:i?like)(?:\([^)]*\))?\.\*+)$")


def _url_decode(raw: bytes, *, plus: bool) -> str:
    """http-types' ``urlDecode``: ``%XX`` decoded, an invalid escape kept as is,
    ``+`` a space when ``plus``."""
    if plus:
        raw = raw.replace(b"+", b" ")
    decoded = _PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    return decoded.decode("utf-8", errors="replace")


def query_pairs(path: str) -> list[tuple[str, str | None]]:
    """The query string as PostgREST parses it: ``(key, value)``, value ``None`` when
    the pair has no ``=`` (http-types ``parseQueryReplacePlus True``)."""
    query = path.partition("#")[0].partition("?")[2].encode("utf-8", errors="surrogateescape")
    pairs: list[tuple[str, str | None]] = []
    for piece in re.split(rb"[&;]", query) if query else []:
        if not piece:
            pairs.append(("", None))
            continue
        key, equals, value = piece.partition(b"=")
        pairs.append(
            (_url_decode(key, plus=True), _url_decode(value, plus=True) if equals else None)
        )
    return pairs


def _segments(path: str) -> list[str]:
    return [_url_decode(s.encode(), plus=False) for s in path.split("/")]


def _embed_path(key: str) -> list[str]:
    """The embedded-resource path of a filter key (``items.id`` -> ``["items"]``):
    dot-separated field names, double-quoted names kept whole, a JSON path
    (``->``/``->>``) ending the field."""
    fields: list[str] = []
    current, quoted, i = "", False, 0
    while i < len(key):
        char = key[i]
        if char == '"':
            quoted = not quoted
        elif not quoted and key.startswith("->", i):
            break
        elif char == "." and not quoted:
            fields.append(current)
            current = ""
            i += 1
            continue
        current += char
        i += 1
    return fields


def _last_word(key: str) -> str:
    return key.rsplit(".", maxsplit=1)[-1]


def _filtering(request: HttpRequest) -> tuple[bool, bool]:
    """(root filtered, every root condition matches all non-null rows)."""
    conditions: list[tuple[str, str]] = []
    for key, value in query_pairs(request.path):
        if value is None or value == "":
            continue  # no value: ignored; an empty value: PostgREST refuses the request
        last = _last_word(key)
        if key in _RESERVED:
            continue
        if last in ("and", "or"):
            if key in ("and", "or", "not.and", "not.or"):
                conditions.append((key, value))
            continue
        if last in _RESERVED_EMBEDDABLE:
            continue
        if not _embed_path(key):
            conditions.append((key, value))
    if not conditions:
        return False, False
    every = all(
        not key.endswith(("and", "or")) and _ALL_ROWS.match(value) is not None
        for key, value in conditions
    )
    return True, every


def _prefer(request: HttpRequest) -> set[str]:
    return {
        item.strip().lower()
        for header in request.header_values("prefer")
        for item in header.split(",")
        if item.strip()
    }


def postgrest_parts(request: HttpRequest, path: str) -> list[Part]:
    """The operation a PostgREST request performs; ``path`` is the path after the API
    prefix (``orders`` or ``rpc/purge``). Raises :class:`SqlError` for a request
    PostgREST refuses before running anything (a path or method it does not serve)."""
    segments = _segments(path.rstrip("/"))
    method = request.method.upper()
    schema_header = "content-profile" if method in _MUTATIONS else "accept-profile"
    schema = request.header(schema_header)
    if len(segments) == 2 and segments[0] == "rpc":
        if method not in ("GET", "HEAD", "POST"):
            raise SqlError(f"PostgREST serves no {method[:10]} on a function")
        name = f"{schema}.{segments[1]}" if schema else segments[1]
        call = Part("CALL", Verb.EXECUTE, "sql:function", name, ("function-call",))
        return [call if method == "POST" else call.tagged("read-only")]
    if len(segments) != 1 or not segments[0]:
        raise SqlError("not a PostgREST resource path")
    name = f"{schema}.{segments[0]}" if schema else segments[0]
    prefer = _prefer(request)
    if method in ("GET", "HEAD", "OPTIONS"):
        return [Part("SELECT", Verb.READ, "sql:table", name)]
    if method == "POST":
        if "resolution=merge-duplicates" in prefer:
            return [Part("UPSERT", Verb.UPDATE, "sql:table", name, ("upsert",))]
        return [Part("INSERT", Verb.CREATE, "sql:table", name)]
    if method == "PUT":
        return [Part("UPSERT", Verb.UPDATE, "sql:table", name, ("upsert",))]
    if method not in ("PATCH", "DELETE"):
        raise SqlError(f"PostgREST serves no {method[:10]} on a table")
    kind = "DELETE" if method == "DELETE" else "UPDATE"
    verb = Verb.DELETE if method == "DELETE" else Verb.UPDATE
    filtered, every = _filtering(request)
    tags: tuple[str, ...]
    if not filtered:
        tags = unfiltered_tags(kind, "unfiltered")
    elif every:
        tags = unfiltered_tags(kind, TAUTOLOGY)
    else:
        tags = ()
    return [Part(kind, verb, "sql:table", name, tags)]

"""Differential test: PostgreSQL's statement list against the recogniser's action list.

Hypothesis builds multi-statement bodies from statements whose effect is known, joined
by separators and decorated with comments and literals that hold ``;``, ``--``, ``/*`` and
``DROP TABLE`` (dollar quotes, ``E''`` strings, nested comments), and sends them through a
carrier (one Neon query, a Neon batch, Supabase's SQL endpoint). pglast's own statement
list (its AST objects, not the JSON tree the recogniser reads) must have exactly the
statements that were put in, in order and of the right kind, and the action with its
readings must name exactly their operations: a statement dropped, merged or invented is
a failure.

``GUARDPROXY_HYPOTHESIS_EXAMPLES`` raises the number of examples (CI runs a few dozen).
"""

from __future__ import annotations

import json
import os

import pglast
import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from recognise_support import http

from guardproxy.recognise.providers.sql.postgres_names import VOLATILE_READS, side_effect_free
from guardproxy.recognise.providers.sql.recogniser import recognise_sql
from guardproxy.recognise.request import HttpRequest

EXAMPLES = int(os.environ.get("GUARDPROXY_HYPOTHESIS_EXAMPLES", "60"))

# (pglast statement class, text, the operations it performs: (operation, resource name))
Block = tuple[str, str, frozenset[tuple[str, str]]]


def block(kind: str, text: str, *parts: tuple[str, str]) -> Block:
    return kind, text, frozenset(parts)


BLOCKS: list[Block] = [
    block("SelectStmt", "SELECT 1", ("SELECT", "")),
    block("SelectStmt", "SELECT * FROM orders WHERE note = ';DROP TABLE x'", ("SELECT", "orders")),
    block("SelectStmt", "SELECT $$; DELETE FROM t; --$$, $q$ /* $q$", ("SELECT", "")),
    block("SelectStmt", "SELECT E'it\\'s; DROP TABLE z; --'", ("SELECT", "")),
    block("SelectStmt", "SELECT 'a''b;c' AS \"x;y\"", ("SELECT", "")),
    block("DeleteStmt", "DELETE FROM orders WHERE id = 1", ("DELETE", "orders")),
    block("DeleteStmt", "DELETE FROM audit", ("DELETE", "audit")),
    block("UpdateStmt", "UPDATE users SET a = 'x;y' WHERE id = 2", ("UPDATE", "users")),
    block("InsertStmt", "INSERT INTO log VALUES ('--', '/*')", ("INSERT", "log")),
    block("DropStmt", "DROP TABLE IF EXISTS old_orders", ("DROP TABLE", "old_orders")),
    block("DropStmt", 'DROP TABLE "Weird;Name"', ("DROP TABLE", "Weird;Name")),
    block("TruncateStmt", "TRUNCATE sessions", ("TRUNCATE", "sessions")),
    block("CreateStmt", "CREATE TABLE t2 (id int, note text DEFAULT ';')", ("CREATE TABLE", "t2")),
    block("GrantStmt", "GRANT SELECT ON orders TO app", ("GRANT", "orders")),
    block("DoStmt", "DO $body$BEGIN PERFORM 1; END$body$", ("DO", "plpgsql")),
    block("TransactionStmt", "BEGIN", ("BEGIN", "")),
    block("TransactionStmt", "COMMIT", ("COMMIT", "")),
    block("VariableSetStmt", "SET statement_timeout = '5s'", ("SET", "statement_timeout")),
    block("CallStmt", "CALL refresh_all()", ("CALL", "refresh_all")),
    block(
        "SelectStmt",
        "WITH gone AS (DELETE FROM carts RETURNING id) SELECT count(*) FROM gone",
        ("DELETE", "carts"),
        ("SELECT", "gone"),
    ),
]

SEPARATORS = [
    ";",
    " ;\n",
    ";-- a comment; DROP TABLE nope\n",
    ";/* block; DROP TABLE nope /* nested; */ */",
    ";\n\n",
]
PREFIXES = ["", "/* lead; */ ", "-- lead; DROP TABLE nope\n", "\n  "]


@st.composite
def bodies(draw: st.DrawFn) -> tuple[list[Block], list[str]]:
    """Statements, and the texts (one per Neon batch query) that carry them."""
    chosen = draw(st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=8))
    texts: list[str] = []
    current = ""
    for index, (_, text, _) in enumerate(chosen):
        current += draw(st.sampled_from(PREFIXES)) + text
        last = index == len(chosen) - 1
        if not last and draw(st.booleans()) and draw(st.booleans()):
            texts.append(current + draw(st.sampled_from(["", ";"])))
            current = ""
        elif not last:
            current += draw(st.sampled_from(SEPARATORS))
    texts.append(current + draw(st.sampled_from(["", ";", " ; -- end"])))
    return chosen, texts


def carried(texts: list[str], carrier: str) -> HttpRequest:
    if carrier == "neon-batch":
        body: object = {"queries": [{"query": t, "params": []} for t in texts]}
        path, host = "/sql", "ep-1.neon.tech"
    elif carrier == "neon":
        body, path, host = {"query": "\n;".join(texts), "params": []}, "/sql", "ep-1.neon.tech"
    else:
        body, path, host = {"query": "\n;".join(texts)}, "/pg/query", "abc.supabase.co"
    return http("POST", path, host=host, port=443, body=json.dumps(body).encode(),
                headers={"content-type": "application/json"})  # fmt: skip


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies(), st.sampled_from(["neon", "neon-batch", "supabase"]))
def test_every_statement_pglast_sees_is_an_action(
    body: tuple[list[Block], list[str]], carrier: str
) -> None:
    chosen, texts = body
    request = carried(texts, carrier)
    sent = json.loads(request.body)
    sent_texts = [q["query"] for q in sent["queries"]] if "queries" in sent else [sent["query"]]
    statements = [raw.stmt for text in sent_texts for raw in pglast.parse_sql(text)]
    assert [type(s).__name__ for s in statements] == [kind for kind, _, _ in chosen]

    action = recognise_sql(request)
    found = {(a.operation, a.resource.name) for a in action.all_readings()}
    expected = frozenset().union(*(parts for _, _, parts in chosen))
    assert found == expected
    assert all(not reading.readings for reading in action.readings)


def test_side_effect_free_functions_are_declared_so_by_postgresql(postgres_url: str) -> None:
    """Every function the recogniser lets a SELECT call as a read is, in a real
    PostgreSQL's catalog, IMMUTABLE or STABLE in all its overloads, or one of the
    volatile built-ins listed by hand as reads (random, clock, locks, sizes...)."""
    query = """
        SELECT p.proname, bool_and(p.provolatile IN ('i', 's'))
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'pg_catalog' GROUP BY p.proname"""
    with psycopg.connect(postgres_url) as connection:
        declared: dict[str, bool] = dict(connection.execute(query).fetchall())
    volatile = {
        name
        for name in side_effect_free()
        if declared.get(name) is False and name not in VOLATILE_READS
    }
    assert volatile == set()
    assert {"lo_unlink", "pg_terminate_backend", "set_config", "dblink_exec"}.isdisjoint(
        side_effect_free()
    )

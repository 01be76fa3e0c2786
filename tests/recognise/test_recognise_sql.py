"""SQL over HTTP: the statement classifier, then each carrier's request shape."""

from __future__ import annotations

import json

import pytest
from recognise_support import http

from guardproxy.action import Confidence, Provider, Verb
from guardproxy.recognise.request import HttpRequest
from guardproxy.recognise.sql import SqlError, judge, looks_like_sql, recognise_sql, statements

# sql -> (operation, verb, resource type, resource name, risk tags)
STATEMENTS: list[tuple[str, str, Verb, str, str, list[str]]] = [
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "MERGE",
        Verb.DELETE,
        "sql:table",
        "t",
        [],
    ),
    (
        "ALTER TABLE events DROP PARTITION p2024",
        "ALTER TABLE",
        Verb.UPDATE,
        "sql:table",
        "events",
        ["drop-partition"],
    ),
    (
        "ALTER TABLE events DROP CONSTRAINT events_pk",
        "ALTER TABLE",
        Verb.UPDATE,
        "sql:table",
        "events",
        [],
    ),
    (
        "SELECT * FROM orders WHERE note = ';DROP TABLE x'",
        "SELECT",
        Verb.READ,
        "sql:table",
        "orders",
        [],
    ),
    ("select count(*) from public.Orders", "SELECT", Verb.READ, "sql:table", "public.Orders", []),
    ("INSERT INTO orders (id) VALUES (1)", "INSERT", Verb.CREATE, "sql:table", "orders", []),
    (
        "UPDATE orders SET paid = true WHERE id = $1",
        "UPDATE",
        Verb.UPDATE,
        "sql:table",
        "orders",
        [],
    ),
    (
        "UPDATE users SET admin = true",
        "UPDATE",
        Verb.UPDATE,
        "sql:table",
        "users",
        ["delete-without-where", "update-without-where"],
    ),
    (
        "UPDATE t SET a = (SELECT b FROM u WHERE u.id = 1)",
        "UPDATE",
        Verb.UPDATE,
        "sql:table",
        "t",
        ["delete-without-where", "update-without-where"],
    ),
    ("DELETE FROM orders WHERE id = 1", "DELETE", Verb.DELETE, "sql:table", "orders", []),
    ("delete from orders", "DELETE", Verb.DELETE, "sql:table", "orders", ["delete-without-where"]),
    (
        "DELETE FROM orders WHERE 1 = 1",
        "DELETE",
        Verb.DELETE,
        "sql:table",
        "orders",
        ["delete-without-where"],
    ),
    ("TRUNCATE TABLE orders", "TRUNCATE", Verb.DELETE, "sql:table", "orders", ["truncate"]),
    ("DROP DATABASE IF EXISTS orders", "DROP DATABASE", Verb.DESTROY, "sql:database", "orders", []),
    (
        "DROP SCHEMA analytics CASCADE",
        "DROP SCHEMA",
        Verb.DESTROY,
        "sql:schema",
        "analytics",
        ["cascade"],
    ),
    (
        'DROP TABLE IF EXISTS "Orders", items',
        "DROP TABLE",
        Verb.DESTROY,
        "sql:table",
        "Orders",
        ["bulk"],
    ),
    ("DROP VIEW v_orders", "DROP VIEW", Verb.DELETE, "sql:view", "v_orders", []),
    ("DROP ROLE reporting", "DROP ROLE", Verb.PERMISSION, "sql:role", "reporting", []),
    (
        "ALTER TABLE orders DROP COLUMN email",
        "ALTER TABLE",
        Verb.UPDATE,
        "sql:table",
        "orders",
        ["drop-column"],
    ),
    (
        "ALTER TABLE orders OWNER TO mallory",
        "ALTER TABLE",
        Verb.PERMISSION,
        "sql:table",
        "orders",
        [],
    ),
    ("GRANT ALL ON orders TO PUBLIC", "GRANT", Verb.PERMISSION, "", "", []),
    ("REVOKE SELECT ON orders FROM bob", "REVOKE", Verb.PERMISSION, "", "", []),
    (
        "CREATE TABLE IF NOT EXISTS orders (id int)",
        "CREATE TABLE",
        Verb.CREATE,
        "sql:table",
        "orders",
        [],
    ),
    (
        "CREATE OR REPLACE TABLE analytics.events AS SELECT 1",
        "CREATE TABLE",
        Verb.DESTROY,
        "sql:table",
        "analytics.events",
        ["replace"],
    ),
    (
        "CREATE OR REPLACE VIEW v AS SELECT 1",
        "CREATE VIEW",
        Verb.UPDATE,
        "sql:view",
        "v",
        ["replace"],
    ),
    (
        "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone",
        "DELETE",
        Verb.DELETE,
        "sql:table",
        "orders",
        ["delete-without-where"],
    ),
    (
        "EXPLAIN ANALYZE DELETE FROM orders",
        "DELETE",
        Verb.DELETE,
        "sql:table",
        "orders",
        ["delete-without-where"],
    ),
    ("EXPLAIN DELETE FROM orders", "EXPLAIN", Verb.READ, "", "", []),
    (
        "BEGIN; DELETE FROM a WHERE id = 1; DROP TABLE b; COMMIT;",
        "DROP TABLE",
        Verb.DESTROY,
        "sql:table",
        "b",
        ["bulk"],
    ),
    ("/* DROP DATABASE x */ SELECT 1 -- ; DROP DATABASE y", "SELECT", Verb.READ, "", "", []),
    ("SELECT $$; DROP TABLE x$$, $tag$ ' $tag$", "SELECT", Verb.READ, "", "", []),
    ("SELECT 'a\\'; DROP TABLE x; --'", "DROP TABLE", Verb.DESTROY, "sql:table", "x", []),
    ("SELECT 'it''s'; DELETE FROM t WHERE id = 2", "DELETE", Verb.DELETE, "sql:table", "t", []),
    ("CALL archive_orders()", "CALL", Verb.EXECUTE, "sql:function", "archive_orders", []),
]


@pytest.mark.parametrize(("sql", "operation", "verb", "rtype", "name", "tags"), STATEMENTS)
def test_classifier(
    sql: str, operation: str, verb: Verb, rtype: str, name: str, tags: list[str]
) -> None:
    judgement = judge([sql])
    chosen = judgement.chosen
    assert judgement.known
    assert (chosen.kind, chosen.verb, chosen.rtype, chosen.name) == (operation, verb, rtype, name)
    assert judgement.tags == tags


def test_unknown_statement_makes_the_whole_body_unknown() -> None:
    judgement = judge(["SELECT 1; FROBNICATE everything"])
    assert not judgement.known


@pytest.mark.parametrize("sql", ["SELECT 'open", "SELECT 1 /* open", "SELECT $$ open", "", ";;"])
def test_unreadable_sql_raises(sql: str) -> None:
    with pytest.raises(SqlError):
        judge([sql])


def test_statements_split_outside_literals() -> None:
    assert len(statements("SELECT ';'; SELECT 2")) == 2


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


NEON_SECRET = "postgres://app:hunter2@ep-cool-1.us-east-2.aws.neon.tech/orders"

CARRIERS: list[tuple[HttpRequest, str, str, Verb, list[str]]] = [
    (
        post(
            "ep-cool-1.us-east-2.aws.neon.tech",
            "/sql",
            {"query": "DROP DATABASE orders", "params": []},
            {"neon-connection-string": NEON_SECRET},
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
            {"neon-connection-string": NEON_SECRET},
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
        ["bulk", "delete-without-where", "truncate"],
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


def test_bigquery_project_is_the_scope() -> None:
    request = post(
        "bigquery.googleapis.com",
        "/bigquery/v2/projects/acme-prod/queries",
        {"query": "DELETE FROM ds.t"},
    )
    action = recognise_sql(request)
    assert action.scope.project == "acme-prod"
    assert action.resource.key == "sql:bigquery.googleapis.com:acme-prod:sql:table/ds.t"


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
        ["delete-without-where"],
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
        "/rest/v1/orders?select=id&limit=10",
        "abcd.supabase.co",
        "supabase",
        "DELETE",
        Verb.DELETE,
        "orders",
        ["delete-without-where"],
    ),
    (
        "PATCH",
        "/rest/v1/users",
        "pgrst.corp",
        "postgrest",
        "UPDATE",
        Verb.UPDATE,
        "users",
        ["delete-without-where", "update-without-where"],
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
        "POST",
        "/rest/v1/rpc/purge_orders",
        "abcd.supabase.co",
        "supabase",
        "CALL",
        Verb.EXECUTE,
        "purge_orders",
        [],
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


@pytest.mark.parametrize(
    ("host", "path", "body", "content_type"),
    [
        ("ep-1.neon.tech", "/sql", b"{not json", "application/json"),
        ("ep-1.neon.tech", "/sql", b'{"query": "DROP TABLE x"}', "text/plain"),
        ("ep-1.neon.tech", "/sql", b'{"query": 42}', "application/json"),
        ("ep-1.neon.tech", "/sql", b'{"queries": []}', "application/json"),
        ("a.snowflakecomputing.com", "/api/v2/statements", b"[]", "application/json"),
        (
            "bigquery.googleapis.com",
            "/bigquery/v2/projects/p/jobs",
            b'{"configuration": {"load": {}}}',
            "application/json",
        ),
        ("ep-1.neon.tech", "/sql", b'{"query": "SELECT \'open"}', "application/json"),
    ],
)
def test_garbage_raises(host: str, path: str, body: bytes, content_type: str) -> None:
    request = http(
        "POST", path, host=host, port=443, body=body, headers={"content-type": content_type}
    )
    with pytest.raises(SqlError):
        recognise_sql(request)


def test_hidden_statement_is_unknown_not_read() -> None:
    request = post("ep-1.neon.tech", "/sql", {"query": "SELECT 1; VACUUM FULL; FROBNICATE t"})
    action = recognise_sql(request)
    assert (action.verb, action.confidence) == (Verb.UNKNOWN, Confidence.UNKNOWN)


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

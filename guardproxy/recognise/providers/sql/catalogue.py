"""SQL's destructive operations: each destructive statement kind (PostgreSQL,
BigQuery, Snowflake and Databricks SQL references) through every carrier that takes SQL
text, and PostgREST's deletes."""

from __future__ import annotations

from collections.abc import Iterator

from guardproxy.recognise.examples import NAME, example_request
from guardproxy.recognise.registry import Example
from guardproxy.recognise.request import HttpRequest

__all__ = ["destructive"]

# Destructive statement kinds (PostgreSQL, BigQuery, Snowflake and Databricks SQL
# references), each sent through every carrier that takes SQL text.
_SQL_STATEMENTS = (
    ("DROP DATABASE", f"DROP DATABASE {NAME}"),
    ("DROP SCHEMA", f"DROP SCHEMA {NAME}"),
    ("DROP TABLE", f"DROP TABLE {NAME}"),
    ("DROP VIEW", f"DROP VIEW {NAME}"),
    ("DROP INDEX", f"DROP INDEX {NAME}"),
    ("DROP FUNCTION", f"DROP FUNCTION {NAME}"),
    ("DROP USER", f"DROP USER {NAME}"),
    ("DROP ROLE", f"DROP ROLE {NAME}"),
    ("TRUNCATE", f"TRUNCATE TABLE {NAME}"),
    ("DELETE without WHERE", f"DELETE FROM {NAME}"),
    ("DELETE with WHERE", f"DELETE FROM {NAME} WHERE id = 7"),
    ("ALTER TABLE DROP COLUMN", f"ALTER TABLE {NAME} DROP COLUMN note"),
    ("CREATE OR REPLACE TABLE", f"CREATE OR REPLACE TABLE {NAME} AS SELECT 1 AS id"),
    ("GRANT", f"GRANT SELECT ON {NAME} TO {NAME}"),
    ("REVOKE", f"REVOKE SELECT ON {NAME} FROM {NAME}"),
    ("CREATE ROLE", f"CREATE ROLE {NAME}"),
    ("ALTER ROLE", f"ALTER ROLE {NAME} WITH SUPERUSER"),
    ("ALTER TABLE OWNER", f"ALTER TABLE {NAME} OWNER TO {NAME}"),
)


def _sql_carriers(sql: str) -> Iterator[tuple[str, HttpRequest]]:
    """``sql`` sent through each SQL-over-HTTP carrier the SQL recogniser reads."""
    yield (
        "neon",
        example_request("POST", "ep-calc.eu-central-1.aws.neon.tech", "/sql", {"query": sql}),
    )
    yield (
        "supabase",
        example_request(
            "POST", "api.supabase.com", f"/v1/projects/{NAME}/database/query", {"query": sql}
        ),
    )
    yield (
        "snowflake",
        example_request(
            "POST", f"{NAME}.snowflakecomputing.com", "/api/v2/statements", {"statement": sql}
        ),
    )
    yield (
        "databricks",
        example_request(
            "POST",
            f"{NAME}.cloud.databricks.com",
            "/api/2.0/sql/statements",
            {"statement": sql, "warehouse_id": NAME},
        ),
    )
    bigquery = f"/bigquery/v2/projects/{NAME}"
    yield (
        "bigquery queries",
        example_request("POST", "bigquery.googleapis.com", f"{bigquery}/queries", {"query": sql}),
    )
    job = {"configuration": {"query": {"query": sql, "useLegacySql": False}}}
    yield (
        "bigquery jobs",
        example_request("POST", "bigquery.googleapis.com", f"{bigquery}/jobs", job),
    )


def destructive() -> Iterator[Example]:
    """Each destructive statement kind through each carrier, and PostgREST deletes."""
    for kind, sql in _SQL_STATEMENTS:
        for carrier, request in _sql_carriers(sql):
            yield Example(f"sql:{carrier}:{kind}", request)
    # PostgREST (Supabase's REST API): the HTTP method is the statement.
    headers = (("apikey", "x"), ("x-client-info", "supabase-js/2.45.0"))
    for carrier, host in (("supabase", f"{NAME}.supabase.co"), ("postgrest", "db.calc.internal")):
        for kind, query in (("DELETE with filter", "?id=eq.7"), ("DELETE without filter", "")):
            request = example_request("DELETE", host, f"/rest/v1/{NAME}{query}", headers=headers)
            yield Example(f"sql:{carrier}:{kind}", request)

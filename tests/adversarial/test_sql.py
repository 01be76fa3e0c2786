"""SQL-over-HTTP bypasses, end to end: a real guardproxy with the shipped policies in
front of a logging upstream on loopback.

Each request below was read as harmless by the hand-written SQL tokenizer the
recogniser used before (a SELECT, a filtered DELETE, a DO as a mere `execute`...) while
PostgreSQL or PostgREST would destroy data with it. The upstream is shaped like the
carrier only as far as the recogniser's rules go: a Neon ``/sql`` request is known by its
``Neon-Connection-String`` header, a PostgREST one by supabase-js's ``apikey`` header,
Supabase's SQL endpoint by ``POST .../pg/query``. The upstream is 127.0.0.1, an
environment the bundle does not know, which it treats as production.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.guard_fixtures import Guard, guard_starter
from e2e.servers import EchoServer

NEON = {"Neon-Connection-String": "postgres://app:pw@ep-1.us-east-2.aws.neon.tech/orders"}
POSTGREST = {"apikey": "anon-key"}

# (case, method, path, headers, body): none of them may reach the upstream undecided.
# All but two were forwarded by the tokenizer's reading; "batch item hidden beside
# query" and "postgrest offset is not a filter" it already caught (kept as regressions).
BYPASSES: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("tautology 'yes'", "POST", "/sql", NEON,
     b'{"query": "DELETE FROM orders WHERE \'yes\'", "params": []}'),
    ("tautology 2 > 1", "POST", "/sql", NEON,
     b'{"query": "DELETE FROM orders WHERE 2 > 1", "params": []}'),
    ("tautology null or not null", "POST", "/sql", NEON,
     b'{"query": "UPDATE users SET admin = true WHERE id IS NULL OR id IS NOT NULL"}'),
    ("row-independent EXISTS", "POST", "/sql", NEON,
     b'{"query": "DELETE FROM orders WHERE EXISTS (SELECT 1 FROM pg_class)"}'),
    ("MERGE ON true", "POST", "/sql", NEON,
     b'{"query": "MERGE INTO orders USING s ON true WHEN MATCHED THEN DELETE"}'),
    ("EXPLAIN (ANALYZE) runs the DELETE", "POST", "/sql", NEON,
     b'{"query": "EXPLAIN (ANALYZE) DELETE FROM orders"}'),
    ("DO block", "POST", "/sql", NEON,
     b'{"query": "DO $$BEGIN EXECUTE \'DROP TABLE orders\'; END$$"}'),
    ("COPY TO PROGRAM", "POST", "/sql", NEON,
     b'{"query": "COPY orders TO PROGRAM \'rm -rf /var/lib/postgresql\'"}'),
    ("COPY TO a server file", "POST", "/sql", NEON,
     b'{"query": "COPY (SELECT 1) TO \'/var/lib/postgresql/data/postgresql.auto.conf\'"}'),
    ("SELECT dblink_exec", "POST", "/sql", NEON,
     b'{"query": "SELECT dblink_exec(\'dbname=orders\', \'DROP TABLE orders\')"}'),
    ("SELECT query_to_xml", "POST", "/sql", NEON,
     b'{"query": "SELECT query_to_xml(\'DELETE FROM orders RETURNING 1\', true, true, \'\')"}'),
    ("SELECT pg_terminate_backend", "POST", "/sql", NEON,
     b'{"query": "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"}'),
    ("SELECT lo_unlink", "POST", "/sql", NEON, b'{"query": "SELECT lo_unlink(16403)"}'),
    ("SELECT a user function", "POST", "/sql", NEON, b'{"query": "SELECT purge_all_orders()"}'),
    ("rule arming a delete", "POST", "/sql", NEON,
     b'{"query": "CREATE RULE r AS ON INSERT TO audit DO ALSO DELETE FROM orders"}'),
    ("ALTER TABLE DROP COLUMN", "POST", "/sql", NEON,
     b'{"query": "ALTER TABLE orders DROP COLUMN email"}'),
    ("DROP TYPE CASCADE", "POST", "/sql", NEON, b'{"query": "DROP TYPE status CASCADE"}'),
    ("row level security off", "POST", "/sql", NEON,
     b'{"query": "ALTER TABLE orders DISABLE ROW LEVEL SECURITY"}'),
    ("duplicate query key", "POST", "/sql", NEON,
     b'{"query": "DROP TABLE orders", "query": "SELECT 1", "params": []}'),
    ("batch item hidden beside query", "POST", "/sql", NEON,
     json.dumps({"query": "SELECT 1", "queries": [{"query": "DROP TABLE orders"}]}).encode()),
    ("supabase pg/query", "POST", "/pg/query", {},
     b'{"query": "SELECT 1; DO $$BEGIN DELETE FROM orders; END$$"}'),
    ("postgrest key without value", "DELETE", "/rest/v1/orders?id", POSTGREST, b""),
    ("postgrest offset is not a filter", "DELETE", "/rest/v1/orders?limit=1000&offset=0",
     POSTGREST, b""),
    ("postgrest embedded filter", "PATCH", "/rest/v1/users?items.id=eq.1", POSTGREST,
     b'{"admin": true}'),
    ("postgrest not.is.null", "DELETE", "/rest/v1/orders?id=not.is.null", POSTGREST, b""),
    ("postgrest GET rpc", "GET", "/rest/v1/rpc/purge_orders", POSTGREST, b""),
]  # fmt: skip

FORWARDED: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("a read", "POST", "/sql", NEON, b'{"query": "SELECT id FROM orders WHERE id = $1"}'),
]  # fmt: skip

# Filtered deletes are held in an unknown environment like every delete
# (common/hold-prod-delete), but only as that: not read as reaching every row.
FILTERED_DELETES: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("a filtered delete", "POST", "/sql", NEON, b'{"query": "DELETE FROM orders WHERE id = 7"}'),
    ("postgrest filtered delete", "DELETE", "/rest/v1/orders?id=eq.7", POSTGREST, b""),
]  # fmt: skip


@pytest.fixture
def upstream() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server
        assert not server.handler_errors


@pytest.fixture
def guard(tmp_path: Path) -> Iterator[Guard]:
    starter = guard_starter(tmp_path)
    start = next(starter)
    yield start(hold_window_seconds=0.3)
    next(starter, None)  # the starter's teardown: stops every guard it started


def send(guard: Guard, upstream: EchoServer, case: tuple[Any, ...]) -> httpx.Response:
    _, method, path, headers, body = case
    session = guard.session()
    with httpx.Client(proxy=session.proxy_url, timeout=15) as client:
        return client.request(
            method,
            f"{upstream.url}{path}",
            headers={"content-type": "application/json", **headers},
            content=body,
        )


def test_destructive_sql_is_decided_and_never_reaches_upstream(
    guard: Guard, upstream: EchoServer
) -> None:
    let_through: list[str] = []
    for case in BYPASSES:
        response = send(guard, upstream, case)
        decision = response.headers.get("X-Guardproxy-Decision", "")
        if response.status_code != 403 or decision not in ("hold", "deny"):
            let_through.append(f"{case[0]}: {response.status_code} {decision or '(none)'}")
    assert not let_through, "forwarded undecided:\n" + "\n".join(let_through)
    assert upstream.requests == [], [r.path for r in upstream.requests]


def test_reads_still_pass(guard: Guard, upstream: EchoServer) -> None:
    for case in FORWARDED:
        response = send(guard, upstream, case)
        assert response.status_code == 200, (case[0], response.status_code, response.text[:200])
    assert len(upstream.requests) == len(FORWARDED)


def test_filtered_deletes_are_held_as_plain_deletes(guard: Guard, upstream: EchoServer) -> None:
    for case in FILTERED_DELETES:
        response = send(guard, upstream, case)
        assert response.status_code == 403, (case[0], response.status_code)
        assert response.headers.get("X-Guardproxy-Decision") == "hold", case[0]
        assert "Deleting sql:table orders (DELETE, environment unknown)" in response.text
        assert "irreversible" not in response.text, (case[0], response.text[:300])
    assert upstream.requests == []

"""The PostgreSQL schema: SQLite's migrations (migrations.py), translated.

PostgreSQL runs migration *n* of SQLite as its own migration *n*, so both backends
have the same tables, columns and version numbers by construction, and the store's
SQL is shared (sql.py).  The translation is a few textual rules for the SQLite-isms
the schema uses, and refuses any it does not know, so a new SQLite migration either
translates or fails the tests until a rule or an override is added here:

* ``CHECK (json_valid(x))`` -> ``CHECK (x::jsonb IS NOT NULL)``; JSON stays text, so
  payloads are kept verbatim;
* ``INTEGER PRIMARY KEY AUTOINCREMENT`` -> an identity column;
* a table without one gets ``rowid``, SQLite's implicit insertion order, which the
  shared queries use to order rows written at the same instant;
* ``BLOB`` -> ``BYTEA``.

What PostgreSQL adds (``EXTRA``): a trigger that announces every hold state change on
the ``guardproxy_holds`` channel (``LISTEN``/``NOTIFY``), whoever made it.

Like the SQLite ones, translated migrations must not change once shipped: add rules
that only match new SQL, or override a new statement instead.
"""

from __future__ import annotations

import re

from guardproxy.store.migrations import MIGRATIONS as SQLITE_MIGRATIONS
from guardproxy.store.migrations import Migration

HOLDS_CHANNEL = "guardproxy_holds"
"""Payload: ``<hold id> <new state>``."""

MIGRATION_LOCK = 0x6775617264
"""The advisory lock key replicas take to migrate one at a time ("guard")."""

CHECKPOINT_LOCK = 0x6368656B70
"""The advisory lock key a transaction holds from reading the last audit checkpoint to
its commit, so replicas add checkpoints one after another ("chekp").  Appends to the
audit chains do not take it: each locks its own chain's row in ``audit_chains``."""

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bjson_valid\((\w+)\)"), r"\1::jsonb IS NOT NULL"),
    (
        re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"),
        "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    ),
    (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT PRIMARY KEY"),  # SQLite's are 64-bit
    (re.compile(r"\bBLOB\b"), "BYTEA"),
)
_SQLITE_ONLY = re.compile(
    r"\b(INSERT OR|REPLACE INTO|PRAGMA|WITHOUT ROWID|AUTOINCREMENT|strftime|julianday"
    r"|datetime\(|json_extract|GLOB|ATTACH)\b",
    re.IGNORECASE,
)
_CREATE_TABLE = re.compile(r"^\s*CREATE TABLE\b", re.IGNORECASE)

OVERRIDES: dict[tuple[int, int], str] = {
    # chain 0 (the records from before migration 7) keeps the id 0 an identity never gives
    (7, 2): """
    INSERT INTO audit_chains (id, writer, head_seq, head_hash) OVERRIDING SYSTEM VALUE
        SELECT 0, 'legacy: the single chain before migration 7', seq, hash
        FROM audit_log ORDER BY seq DESC LIMIT 1
    """,
}
"""(version, statement index) -> PostgreSQL text, for a statement no rule translates."""

EXTRA: dict[int, Migration] = {
    1: (
        f"""
        CREATE FUNCTION guardproxy_hold_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{HOLDS_CHANNEL}', NEW.id || ' ' || NEW.state);
            RETURN NULL;
        END
        $$
        """,
        """
        CREATE TRIGGER holds_state_changed AFTER UPDATE OF state ON holds
            FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
            EXECUTE FUNCTION guardproxy_hold_changed()
        """,
    ),
}
"""PostgreSQL-only statements run at the end of a version."""


def translate(statement: str) -> str:
    """One SQLite DDL statement in PostgreSQL's dialect; ValueError if it has no rule."""
    translated = statement
    has_identity = "AUTOINCREMENT" in statement
    for pattern, replacement in _RULES:
        translated = pattern.sub(replacement, translated)
    unknown = _SQLITE_ONLY.search(translated)
    if unknown:
        raise ValueError(
            f"no PostgreSQL form for {unknown.group(0)!r} in:\n{statement}\n"
            "add a rule or an override in guardproxy/store/postgres_migrations.py"
        )
    if _CREATE_TABLE.match(translated) and not has_identity:
        body, _, tail = translated.rpartition(")")
        translated = f"{body.rstrip()},\n    rowid BIGINT GENERATED ALWAYS AS IDENTITY\n){tail}"
    return translated


def _version(number: int, sqlite: Migration) -> Migration:
    statements = tuple(
        OVERRIDES.get((number, index)) or translate(statement)
        for index, statement in enumerate(sqlite)
    )
    return statements + EXTRA.get(number, ())


MIGRATIONS: tuple[Migration, ...] = tuple(
    _version(number, sqlite) for number, sqlite in enumerate(SQLITE_MIGRATIONS, start=1)
)
"""As many as SQLite's, each the same change."""

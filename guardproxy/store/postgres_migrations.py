"""The PostgreSQL schema: migration *n* here is SQLite's migration *n* (same tables,
same columns, same version numbers), so a database can be compared row for row and
the store's SQL is shared (guardproxy/store/sql.py).

What PostgreSQL adds, all in its version 1:

* ``rowid``: SQLite's implicit insertion order, as an identity column;
* JSON columns checked by a cast to ``jsonb`` (SQLite: ``json_valid``), kept as text
  so the payload is stored verbatim;
* a trigger that announces every hold state change on the ``guardproxy_holds``
  channel (``LISTEN``/``NOTIFY``), whoever made it: a replica, the CLI, a script.

Never edit a migration that has shipped; add one, and the SQLite one with it.
"""

from __future__ import annotations

from guardproxy.store.migrations import Migration

HOLDS_CHANNEL = "guardproxy_holds"
"""Payload: ``<hold id> <new state>``."""

MIGRATION_LOCK = 0x6775617264
"""The advisory lock key replicas take to migrate one at a time ("guard")."""

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

_V1: Migration = (
    """
    CREATE TABLE sessions (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        user_name  TEXT NOT NULL,
        agent      TEXT NOT NULL,
        command    TEXT NOT NULL CHECK (command::jsonb IS NOT NULL),
        cwd        TEXT NOT NULL,
        labels     TEXT NOT NULL CHECK (labels::jsonb IS NOT NULL),
        started_at TEXT NOT NULL,
        ended_at   TEXT,
        anonymous  INTEGER NOT NULL CHECK (anonymous IN (0, 1)),
        token_hash TEXT,
        rowid      BIGINT GENERATED ALWAYS AS IDENTITY
    )
    """,
    """
    CREATE UNIQUE INDEX sessions_token_hash ON sessions (token_hash)
        WHERE token_hash IS NOT NULL
    """,
    "CREATE INDEX sessions_started ON sessions (ended_at, started_at)",
    """
    CREATE TABLE holds (
        id               TEXT PRIMARY KEY,
        created_at       TEXT NOT NULL,
        expires_at       TEXT NOT NULL,
        session_id       TEXT NOT NULL,
        request_digest   TEXT NOT NULL,
        action           TEXT NOT NULL CHECK (action::jsonb IS NOT NULL),
        decision         TEXT NOT NULL CHECK (decision::jsonb IS NOT NULL),
        summary          TEXT NOT NULL,
        state            TEXT NOT NULL
            CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'released')),
        grant_spec       TEXT NOT NULL,
        resolved_at      TEXT,
        resolved_by      TEXT,
        reason           TEXT,
        grant_expires_at TEXT,
        released_at      TEXT,
        rowid            BIGINT GENERATED ALWAYS AS IDENTITY
    )
    """,
    "CREATE INDEX holds_request ON holds (session_id, request_digest, state)",
    "CREATE INDEX holds_state ON holds (state, expires_at)",
    "CREATE INDEX holds_created ON holds (created_at)",
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
    """
    CREATE TABLE approvals (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        hold_id         TEXT NOT NULL REFERENCES holds (id),
        approver        TEXT NOT NULL,
        approver_groups TEXT NOT NULL CHECK (approver_groups::jsonb IS NOT NULL),
        verdict         TEXT NOT NULL CHECK (verdict IN ('approve', 'deny')),
        reason          TEXT NOT NULL,
        at              TEXT NOT NULL
    )
    """,
    "CREATE INDEX approvals_hold ON approvals (hold_id)",
    """
    CREATE TABLE decisions (
        id              TEXT PRIMARY KEY,
        at              TEXT NOT NULL,
        session_id      TEXT NOT NULL,
        action          TEXT NOT NULL CHECK (action::jsonb IS NOT NULL),
        context         TEXT NOT NULL CHECK (context::jsonb IS NOT NULL),
        decision        TEXT NOT NULL CHECK (decision::jsonb IS NOT NULL),
        outcome         TEXT NOT NULL,
        hold_id         TEXT REFERENCES holds (id),
        upstream_status INTEGER,
        rowid           BIGINT GENERATED ALWAYS AS IDENTITY
    )
    """,
    "CREATE INDEX decisions_session ON decisions (session_id, at)",
    "CREATE INDEX decisions_outcome ON decisions (outcome, at)",
    "CREATE INDEX decisions_at ON decisions (at)",
    "CREATE INDEX decisions_hold ON decisions (hold_id)",
)

_V2: Migration = (
    """
    CREATE TABLE session_events (
        seq                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id          TEXT NOT NULL,
        at                  TEXT NOT NULL,
        summary             TEXT NOT NULL,
        operation           TEXT NOT NULL,
        verb                TEXT NOT NULL,
        provider            TEXT NOT NULL,
        environment         TEXT NOT NULL,
        resource_key        TEXT NOT NULL,
        outcome             TEXT NOT NULL,
        protection_removed  INTEGER NOT NULL CHECK (protection_removed IN (0, 1)),
        recreate            INTEGER NOT NULL CHECK (recreate IN (0, 1)),
        destroyed_container TEXT NOT NULL
    )
    """,
    "CREATE INDEX session_events_session ON session_events (session_id, seq)",
    """
    CREATE INDEX session_events_resource ON session_events (resource_key, outcome, seq)
        WHERE resource_key != ''
    """,
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2)
"""Applied in order; as many as SQLite's, each the same change."""

"""The SQLite schema, as an append-only list of migrations.

Migration *n* (1-based) takes a database from version n-1 to n.  Never edit a
migration that has shipped: databases in the field already ran it.  Add a new one.

Each migration is a sequence of single statements rather than one script, because
``sqlite3``'s ``executescript`` commits any open transaction first, and a migration
must apply (with its ``schema_version`` row) all or nothing.

Conventions: timestamps are TEXT, UTC, fixed width (``2025-01-31T12:00:00.000000Z``)
so string order is time order; JSON is TEXT checked with ``json_valid``; column names
avoid SQL keywords (``user``, ``grant``, ``groups``) so the PostgreSQL backend can
reuse them.
"""

from __future__ import annotations

Migration = tuple[str, ...]

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""

_V1: Migration = (
    """
    CREATE TABLE sessions (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        user_name  TEXT NOT NULL,
        agent      TEXT NOT NULL,
        command    TEXT NOT NULL CHECK (json_valid(command)),
        cwd        TEXT NOT NULL,
        labels     TEXT NOT NULL CHECK (json_valid(labels)),
        started_at TEXT NOT NULL,
        ended_at   TEXT,
        anonymous  INTEGER NOT NULL CHECK (anonymous IN (0, 1)),
        token_hash TEXT
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
        action           TEXT NOT NULL CHECK (json_valid(action)),
        decision         TEXT NOT NULL CHECK (json_valid(decision)),
        summary          TEXT NOT NULL,
        state            TEXT NOT NULL
            CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'released')),
        grant_spec       TEXT NOT NULL,
        resolved_at      TEXT,
        resolved_by      TEXT,
        reason           TEXT,
        grant_expires_at TEXT,
        released_at      TEXT
    )
    """,
    "CREATE INDEX holds_request ON holds (session_id, request_digest, state)",
    "CREATE INDEX holds_state ON holds (state, expires_at)",
    "CREATE INDEX holds_created ON holds (created_at)",
    """
    CREATE TABLE approvals (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        hold_id         TEXT NOT NULL REFERENCES holds (id),
        approver        TEXT NOT NULL,
        approver_groups TEXT NOT NULL CHECK (json_valid(approver_groups)),
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
        action          TEXT NOT NULL CHECK (json_valid(action)),
        context         TEXT NOT NULL CHECK (json_valid(context)),
        decision        TEXT NOT NULL CHECK (json_valid(decision)),
        outcome         TEXT NOT NULL,
        hold_id         TEXT REFERENCES holds (id),
        upstream_status INTEGER
    )
    """,
    "CREATE INDEX decisions_session ON decisions (session_id, at)",
    "CREATE INDEX decisions_outcome ON decisions (outcome, at)",
    "CREATE INDEX decisions_at ON decisions (at)",
    "CREATE INDEX decisions_hold ON decisions (hold_id)",
)

_V2: Migration = (
    # The session history tracker's log (guardproxy/session/history.py): compact rows,
    # so a session's windows and a resource's tombstones survive a restart without
    # parsing the decision log's JSON.
    """
    CREATE TABLE session_events (
        seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
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

_V3: Migration = (
    # Approvers (issue 6): people with groups who may release holds, each with their own
    # control API token (only its sha256 is kept).  A hold keeps a redacted snapshot of
    # the request and the context it was decided in, for the approver and re-evaluation.
    """
    CREATE TABLE approvers (
        name            TEXT PRIMARY KEY,
        approver_groups TEXT NOT NULL CHECK (json_valid(approver_groups)),
        token_hash      TEXT NOT NULL UNIQUE,
        created_at      TEXT NOT NULL
    )
    """,
    "ALTER TABLE holds ADD COLUMN detail TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(detail))",
)

_V4: Migration = (
    # The audit chain (guardproxy/store/chain.py): append-only, each row hashing the
    # one before.  Decisions stay in `decisions` too (operational queries, upstream
    # status); this table is the tamper-evident trail that `audit verify` checks.
    """
    CREATE TABLE audit_log (
        seq         INTEGER PRIMARY KEY,
        record_id   TEXT NOT NULL UNIQUE,
        kind        TEXT NOT NULL,
        at          TEXT NOT NULL,
        session_id  TEXT NOT NULL,
        subject     TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        provider    TEXT NOT NULL,
        payload     TEXT NOT NULL,
        prev_hash   TEXT NOT NULL,
        hash        TEXT NOT NULL
    )
    """,
    "CREATE INDEX audit_log_at ON audit_log (at)",
    "CREATE INDEX audit_log_session ON audit_log (session_id, at)",
    "CREATE INDEX audit_log_subject ON audit_log (subject)",
    "CREATE INDEX audit_log_kind ON audit_log (kind, at)",
)

_V5: Migration = (
    # Approvals that follow the user and working directory to a new session (a one-shot
    # `guardproxy run` started again): holds are looked up by request digest alone.
    "CREATE INDEX holds_digest ON holds (request_digest, state)",
)

_V6: Migration = (
    # On-call routing and chat approvals (issue 19).  An approver's identities in Slack,
    # PagerDuty and Opsgenie; the pages sent for a hold (claimed before sending, so each
    # level is paged and resolved once whichever replica does it); the chat message that
    # shows a hold (to update it); and the chat callbacks already handled (replays).
    """
    CREATE TABLE approver_links (
        approver    TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('slack', 'pagerduty', 'opsgenie')),
        external_id TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (approver, kind)
    )
    """,
    "CREATE UNIQUE INDEX approver_links_external ON approver_links (kind, external_id)",
    """
    CREATE TABLE pages (
        hold_id      TEXT NOT NULL,
        oncall_group TEXT NOT NULL,
        level        INTEGER NOT NULL CHECK (level >= 1),
        schedule     TEXT NOT NULL,
        pager        TEXT NOT NULL,
        dedup_key    TEXT NOT NULL,
        claimed_at   TEXT NOT NULL,
        triggered_at TEXT,
        resolved_at  TEXT,
        error        TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (hold_id, oncall_group, level)
    )
    """,
    """
    CREATE TABLE chat_messages (
        hold_id    TEXT NOT NULL,
        kind       TEXT NOT NULL,
        channel    TEXT NOT NULL,
        message_ts TEXT NOT NULL,
        posted_at  TEXT NOT NULL,
        PRIMARY KEY (hold_id, kind)
    )
    """,
    """
    CREATE TABLE chat_requests (
        request_key TEXT PRIMARY KEY,
        at          TEXT NOT NULL
    )
    """,
    "CREATE INDEX chat_requests_at ON chat_requests (at)",
)

_V7: Migration = (
    # The audit trail at fleet scale (store/chain.py): one chain per writer instead of one
    # chain under one lock.  `audit_chains` holds each chain's head, whose row a writer
    # locks to append (so writers of different chains never wait for each other);
    # `audit_log` is rebuilt with the record's chain and its sequence number in that chain,
    # and `position`, the order records were appended in across chains.  The existing
    # records become chain 0 ("legacy"), unchanged: their seq, links and hashes verify as
    # before.  Checkpoints bind the heads of every chain into one signed hash.
    """
    CREATE TABLE audit_chains (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        writer    TEXT NOT NULL,
        head_seq  BIGINT NOT NULL,
        head_hash TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE audit_log_chained (
        position    INTEGER PRIMARY KEY AUTOINCREMENT,
        chain       BIGINT NOT NULL REFERENCES audit_chains (id),
        seq         BIGINT NOT NULL,
        record_id   TEXT NOT NULL UNIQUE,
        kind        TEXT NOT NULL,
        at          TEXT NOT NULL,
        session_id  TEXT NOT NULL,
        subject     TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        provider    TEXT NOT NULL,
        payload     TEXT NOT NULL,
        prev_hash   TEXT NOT NULL,
        hash        TEXT NOT NULL,
        UNIQUE (chain, seq)
    )
    """,
    """
    INSERT INTO audit_chains (id, writer, head_seq, head_hash)
        SELECT 0, 'legacy: the single chain before migration 7', seq, hash
        FROM audit_log ORDER BY seq DESC LIMIT 1
    """,
    """
    INSERT INTO audit_log_chained (chain, seq, record_id, kind, at, session_id, subject,
                                   outcome, provider, payload, prev_hash, hash)
        SELECT 0, seq, record_id, kind, at, session_id, subject, outcome, provider, payload,
               prev_hash, hash
        FROM audit_log ORDER BY seq
    """,
    "DROP TABLE audit_log",
    "ALTER TABLE audit_log_chained RENAME TO audit_log",
    "CREATE INDEX audit_log_at ON audit_log (at)",
    "CREATE INDEX audit_log_session ON audit_log (session_id, at)",
    "CREATE INDEX audit_log_subject ON audit_log (subject)",
    "CREATE INDEX audit_log_kind ON audit_log (kind, at)",
    """
    CREATE TABLE audit_checkpoints (
        seq       INTEGER PRIMARY KEY,
        at        TEXT NOT NULL,
        key_id    TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL,
        signature TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE audit_checkpoint_heads (
        checkpoint BIGINT NOT NULL REFERENCES audit_checkpoints (seq),
        chain      BIGINT NOT NULL,
        seq        BIGINT NOT NULL,
        hash       TEXT NOT NULL,
        PRIMARY KEY (checkpoint, chain)
    )
    """,
    "CREATE INDEX audit_checkpoint_heads_chain ON audit_checkpoint_heads (chain, seq)",
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7)
"""Applied in order; the database's version is how many of these it has run."""

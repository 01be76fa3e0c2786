"""Storage for sessions, holds, approval events and the decision log.

Callers depend on the :class:`Store` protocol and get an implementation from
:func:`open_store`: SQLite by default, PostgreSQL for a fleet of replicas.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from guardproxy.store.base import (
    GRANT_ONCE,
    AlreadyExistsError,
    Approval,
    Approver,
    ApproverLink,
    AuditChain,
    AuditEntry,
    AuditRecord,
    ChainHead,
    ChatMessage,
    Checkpoint,
    DecisionRecord,
    EventTotal,
    Hold,
    HoldConflict,
    HoldImpact,
    HoldState,
    InvalidValueError,
    NotFoundError,
    Page,
    SafetyStepRecord,
    SchemaVersionError,
    Session,
    SessionEvent,
    Store,
    StoreError,
    Verdict,
    grant_seconds,
    hash_token,
    new_hold_id,
)
from guardproxy.store.sqlite import DEFAULT_SYNCHRONOUS, SYNCHRONOUS_LEVELS, SqliteStore

__all__ = [
    "GRANT_ONCE",
    "SYNCHRONOUS_LEVELS",
    "AlreadyExistsError",
    "Approval",
    "Approver",
    "ApproverLink",
    "AuditChain",
    "AuditEntry",
    "AuditRecord",
    "ChainHead",
    "ChatMessage",
    "Checkpoint",
    "DecisionRecord",
    "EventTotal",
    "Hold",
    "HoldConflict",
    "HoldImpact",
    "HoldState",
    "InvalidValueError",
    "NotFoundError",
    "Page",
    "SafetyStepRecord",
    "SchemaVersionError",
    "Session",
    "SessionEvent",
    "SqliteStore",
    "Store",
    "StoreError",
    "Verdict",
    "commits_quickly",
    "grant_seconds",
    "hash_token",
    "new_hold_id",
    "open_store",
]

_POSTGRES_SCHEMES = ("postgresql", "postgres")


def open_store(url_or_path: str, *, writer: str = "") -> Store:
    """Open the store named by a URL or a path.

    ``writer`` says who appends through it (``proxy``, ``decision writer``...), kept with
    its audit chain beside the host and process id.

    * ``sqlite:///abs/path.db`` (three slashes, absolute path) or a plain path
      (``~`` is expanded): :class:`SqliteStore`; ``sqlite:///abs/path.db?synchronous=full``
      syncs every commit to the disk (see :mod:`guardproxy.store.sqlite`).
    * ``postgresql://...`` (or ``postgres://``, ``postgresql+psycopg://``): a libpq URL,
      :class:`~guardproxy.store.postgres.PostgresStore` (fleet mode).

    Anything else raises :class:`StoreError` rather than guessing, so a typo in the
    configuration stops the proxy instead of silently creating a stray database.
    """
    text = url_or_path.strip()
    if not text:
        raise StoreError("no store given: expected sqlite:///path.db or a file path")
    if "://" not in text:
        return SqliteStore(Path(text).expanduser(), writer=writer)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in _POSTGRES_SCHEMES or scheme.startswith("postgresql+"):
        # imported here: loading the driver costs a quarter second nobody else should pay
        from guardproxy.store.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(urlunsplit(parts._replace(scheme="postgresql")), writer=writer)
    if scheme != "sqlite":
        raise StoreError(
            f"unknown store scheme {parts.scheme!r}: expected sqlite://, postgresql:// or a path"
        )
    path = unquote(parts.path)
    if parts.netloc or parts.fragment or not path.startswith("/"):
        raise StoreError(
            f"bad SQLite URL {url_or_path!r}: expected sqlite:///absolute/path.db "
            "(three slashes, no host), optionally ?synchronous=full"
        )
    return SqliteStore(
        Path(path), writer=writer, synchronous=_sqlite_synchronous(url_or_path, parts.query)
    )


def _sqlite_synchronous(url: str, query: str) -> str:
    """The ``synchronous`` level a SQLite URL asks for (its only parameter)."""
    options = parse_qsl(query, keep_blank_values=True, strict_parsing=False)
    names = [name for name, _ in options]
    if any(name != "synchronous" for name in names) or len(names) > 1:
        raise StoreError(
            f"bad SQLite URL {url!r}: the only parameter is synchronous "
            f"({' or '.join(SYNCHRONOUS_LEVELS)}), given once"
        )
    if not options:
        return DEFAULT_SYNCHRONOUS
    level = options[0][1].strip().lower()
    if level not in SYNCHRONOUS_LEVELS:
        raise StoreError(
            f"bad SQLite URL {url!r}: synchronous={options[0][1]!r}, "
            f"expected {' or '.join(SYNCHRONOUS_LEVELS)}"
        )
    return level


def commits_quickly(store: Store) -> bool:
    """Whether ``store``'s commits return without waiting for a disk or a network (SQLite
    with ``synchronous = normal``): the proxy may then write a decision record on its event
    loop instead of handing it to a thread."""
    return isinstance(store, SqliteStore) and not store.commits_wait_for_disk

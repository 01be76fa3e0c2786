"""Storage for sessions, holds, approval events and the decision log.

Callers depend on the :class:`Store` protocol and get an implementation from
:func:`open_store`: SQLite by default, PostgreSQL for a fleet of replicas.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

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
    HoldState,
    InvalidValueError,
    NotFoundError,
    Page,
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
from guardproxy.store.sqlite import SqliteStore

__all__ = [
    "GRANT_ONCE",
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
    "HoldState",
    "InvalidValueError",
    "NotFoundError",
    "Page",
    "SchemaVersionError",
    "Session",
    "SessionEvent",
    "SqliteStore",
    "Store",
    "StoreError",
    "Verdict",
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
      (``~`` is expanded): :class:`SqliteStore`.
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
    if parts.netloc or parts.query or parts.fragment or not path.startswith("/"):
        raise StoreError(
            f"bad SQLite URL {url_or_path!r}: expected sqlite:///absolute/path.db "
            "(three slashes, no host or query)"
        )
    return SqliteStore(Path(path), writer=writer)

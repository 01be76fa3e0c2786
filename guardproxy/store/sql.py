"""The store's SQL, shared by the SQLite and PostgreSQL backends.

Both backends keep the same tables with the same column types (timestamps as
fixed-width UTC text, JSON as verbatim text), so every query, transition and row
mapping is written once here.  A backend supplies transactions (:meth:`_read`,
:meth:`_transaction`) that yield a :class:`Db`, and the few things that differ:

* queries use ``?`` placeholders; the PostgreSQL connection adapter rewrites them;
* ``rowid`` orders rows inserted at the same instant (SQLite's implicit column; an
  identity column of that name in PostgreSQL);
* ``_FOR_UPDATE`` locks a hold read before it is changed.  SQLite serialises
  writers with ``BEGIN IMMEDIATE`` and needs nothing; PostgreSQL's row lock makes a
  second approver wait and then see the first one's verdict;
* ``_store_decisions`` writes decisions with their chain records (PostgreSQL: one
  statement, one round trip);
* ``_lock_checkpoints`` serialises checkpoints (SQLite: already, by ``BEGIN
  IMMEDIATE``; PostgreSQL: an advisory lock held until commit);
* ``_json_field`` reads a key of a JSON column (``json_extract`` / ``->>``);
* which driver exceptions are integrity errors, and what they mean.
"""

from __future__ import annotations

from guardproxy.store.sql_approvers import ApproversSql
from guardproxy.store.sql_audit import AuditSql
from guardproxy.store.sql_base import (
    INSERT_SESSION_EVENTS,
    Cursor,
    Db,
    Row,
    apply_migrations,
    schema_too_new,
    writer_name,
)
from guardproxy.store.sql_holds import HoldsSql
from guardproxy.store.sql_sessions import SessionsSql

__all__ = [
    "INSERT_SESSION_EVENTS",
    "Cursor",
    "Db",
    "Row",
    "SqlStore",
    "apply_migrations",
    "schema_too_new",
    "writer_name",
]


class SqlStore(SessionsSql, HoldsSql, ApproversSql, AuditSql):
    """:class:`~guardproxy.store.base.Store` over any SQL backend with the shared schema."""

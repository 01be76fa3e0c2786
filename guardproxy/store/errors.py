"""The store's errors: every failure of a :class:`~guardproxy.store.base.Store` is a
:class:`StoreError`."""

from __future__ import annotations


class StoreError(Exception):
    """Any store failure; callers that cannot proceed without the store fail closed."""


class InvalidValueError(StoreError, ValueError):
    """The caller passed something the store will not keep (a naive datetime, a bad grant)."""


class NotFoundError(StoreError, LookupError):
    """The record an update refers to does not exist."""


class AlreadyExistsError(StoreError):
    """A record with that id (or session token hash) is already stored."""


class SchemaVersionError(StoreError):
    """The database was written by a newer guardproxy than this one."""

"""One operation a SQL request performs, as the dialect readers classify it.

Every reader (PostgreSQL through pglast, the other dialects through sqlglot, PostgREST
through its own query-string rules) turns a request into a list of :class:`Part`: one
per statement, plus one per operation a statement performs inside itself (a
``WITH ... DELETE`` CTE, a function with side effects called from a ``SELECT``). The
recogniser turns each distinct part into an action, the most dangerous first, the others
its readings, so the engine decides every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from guardproxy.action import Verb


class SqlError(ValueError):
    """SQL text or a carrier body the recogniser cannot read."""


@dataclass(frozen=True)
class Part:
    """One classified operation: ``operation`` is the statement kind as SQL names it
    (``DROP TABLE``, ``DELETE``, ``CALL``), ``name`` the object it acts on."""

    operation: str
    verb: Verb
    rtype: str = ""
    name: str = ""
    tags: tuple[str, ...] = ()

    def tagged(self, *tags: str) -> Part:
        """This part with ``tags`` added (each once, in order)."""
        merged = tuple(dict.fromkeys((*self.tags, *tags)))
        return Part(self.operation, self.verb, self.rtype, self.name, merged)


SEVERITY = {
    Verb.UNKNOWN: 8,
    Verb.DESTROY: 7,
    Verb.DELETE: 6,
    Verb.PERMISSION: 5,
    Verb.EXECUTE: 4,
    Verb.UPDATE: 3,
    Verb.CREATE: 2,
    Verb.READ: 1,
}
DESTRUCTIVE = frozenset({Verb.DELETE, Verb.DESTROY})

NO_WHERE = "delete-without-where"
"""A DELETE or UPDATE that reaches every row (the shipped `common` bundle holds it in
production); an UPDATE also carries ``update-without-where``."""
TAUTOLOGY = "tautology"
"""Its WHERE clause does not depend on the row (``WHERE 1 = 1``, ``WHERE 'yes'``,
``WHERE EXISTS (SELECT 1 FROM other)``) or is true for every row (``id = id``)."""
DYNAMIC = "dynamic-sql"
"""SQL built or chosen at run time (``DO``, ``EXECUTE``, ``EXECUTE IMMEDIATE``, SQL in a
non-constant argument): what it does cannot be read, so it is taken as a destroy."""


def unfiltered_tags(kind: str, *extra: str) -> tuple[str, ...]:
    """The tags of a DELETE (``kind`` ``DELETE``) or UPDATE that reaches every row."""
    base = (NO_WHERE, "update-without-where") if kind == "UPDATE" else (NO_WHERE,)
    return (*base, *extra)


def ordered(parts: list[Part]) -> list[Part]:
    """Distinct parts, the most dangerous first (verb, then the number of risk tags; ties
    keep the order the statements came in). Several destructive parts tag each other
    ``bulk``: one request deleting in several places is a bulk delete."""
    distinct = list(dict.fromkeys(parts))
    if sum(p.verb in DESTRUCTIVE for p in distinct) > 1:
        distinct = list(
            dict.fromkeys(p.tagged("bulk") if p.verb in DESTRUCTIVE else p for p in distinct)
        )
    return sorted(distinct, key=lambda p: (-SEVERITY[p.verb], -len(p.tags)))

"""BigQuery (GoogleSQL), Snowflake and Databricks (Spark SQL) statements, read with
sqlglot in the carrier's own dialect.

Each statement sqlglot parses is classified from its expression tree, like the
PostgreSQL reader does from libpg_query's: DML without a filtering WHERE is unfiltered,
``CREATE OR REPLACE TABLE`` and ``INSERT OVERWRITE`` replace data (destroy / truncate),
``EXECUTE IMMEDIATE`` is dynamic SQL. sqlglot falls back to an opaque ``Command`` for a
statement it cannot parse (``BEGIN ... END`` scripts, ``VACUUM``, ``REMOVE @stage``);
such a statement is ambiguous: only a few heads that cannot change anything, or whose
worst effect is known, are classified, anything else is ``unknown`` (fail closed). A
text sqlglot rejects outright raises :class:`SqlError`.

A function sqlglot does not know (``exp.Anonymous``) that is qualified (``ds.fn``: a
user-defined, possibly remote, function), defined in the same text, or a Snowflake
``SYSTEM$`` function is an ``execute``; the functions sqlglot models are the dialect's
built-ins and read.
"""

from __future__ import annotations

import logging

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from guardproxy.action import Verb
from guardproxy.recognise.sql_statement import DYNAMIC, TAUTOLOGY, Part, SqlError, unfiltered_tags

__all__ = ["DIALECTS", "read_dialect"]

DIALECTS = {
    "bigquery": "bigquery",
    "snowflake": "snowflake",
    "databricks": "databricks",
    # the engines behind the AWS data APIs (recognise/aws_payload.py)
    "mysql": "mysql",
    "redshift": "redshift",
    "athena": "athena",
}
"""Carrier (or engine) -> sqlglot dialect."""

# sqlglot logs a warning for every statement it falls back to a Command for; the
# recogniser reports that itself (the part is tagged `unparsed`).
logging.getLogger("sqlglot").setLevel(logging.ERROR)

_COMMAND_HEADS: dict[str, tuple[Verb, tuple[str, ...]]] = {
    "SHOW": (Verb.READ, ()),
    "DESCRIBE": (Verb.READ, ()),
    "DESC": (Verb.READ, ()),
    "LIST": (Verb.READ, ()),
    "LS": (Verb.READ, ()),
    "USE": (Verb.READ, ()),
    "GRANT": (Verb.PERMISSION, ()),
    "REVOKE": (Verb.PERMISSION, ()),
    "DENY": (Verb.PERMISSION, ()),
    "CALL": (Verb.EXECUTE, ("function-call",)),
    "EXECUTE": (Verb.DESTROY, (DYNAMIC,)),  # EXECUTE IMMEDIATE '...'
    "REMOVE": (Verb.DELETE, ("stage-files",)),
    "RM": (Verb.DELETE, ("stage-files",)),
    "VACUUM": (Verb.DELETE, ("vacuum",)),  # Delta: deletes the files time travel needs
    "DROP": (Verb.DESTROY, ()),
}
_READ_STATEMENTS = (
    exp.Use,
    exp.Describe,
    exp.Show,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Declare,
    exp.Set,
    exp.Cache,
    exp.Uncache,
)
_CONTAINERS = {"DATABASE": "database", "SCHEMA": "schema", "CATALOG": "database"}
_DROP_DESTROYS = frozenset({"DATABASE", "SCHEMA", "CATALOG", "TABLE"})
_PERMISSION_KINDS = frozenset({"USER", "ROLE", "GROUP", "POLICY"})


def read_dialect(text: str, carrier: str) -> list[Part]:
    """The parts of ``text`` in the carrier's dialect; raises :class:`SqlError` if
    sqlglot cannot parse it."""
    dialect = DIALECTS[carrier]
    try:
        statements = sqlglot.parse(text, read=dialect)
    except SqlglotError as exc:
        raise SqlError(f"sqlglot cannot parse it as {dialect}: {str(exc)[:120]}") from exc
    defined = {
        _table_name(s.this.this).lower()
        for s in statements
        if isinstance(s, exp.Create) and isinstance(s.this, exp.UserDefinedFunction)
    }
    parts: list[Part] = []
    for statement in statements:
        if isinstance(statement, exp.Expression):
            parts.extend(_statement(statement, dialect))
            parts.extend(_functions(statement, dialect, defined))
    if not parts:
        raise SqlError("no SQL statement")
    return parts


def _table_name(node: exp.Expression | None) -> str:
    """``project.dataset.table`` / ``db.schema.table`` as written (without quotes)."""
    if isinstance(node, exp.Schema):
        node = node.this
    if isinstance(node, exp.Table):
        return ".".join(p.name for p in node.parts)
    if isinstance(node, exp.Expression):
        return node.name or node.sql()
    return ""


def _target_names(table: exp.Expression | None) -> frozenset[str]:
    if not isinstance(table, exp.Table):
        return frozenset()
    if table.alias:
        return frozenset({table.alias})
    return frozenset({table.name, _table_name(table)})


def _references(node: exp.Expression, names: frozenset[str]) -> bool:
    """Whether ``node`` reads the target's row (see sql_postgres._references: an
    unqualified column outside a subquery counts, inside one only a qualified one)."""
    for column in node.find_all(exp.Column):
        inside = False
        parent = column.parent
        while parent is not None and parent is not node:
            if isinstance(parent, exp.Select | exp.Subquery):
                inside = True
                break
            parent = parent.parent
        if not column.table:
            if not inside:
                return True
            continue
        if column.table in names:
            return True
    return False


def _tautology(node: exp.Expression, names: frozenset[str]) -> bool:
    """As sql_postgres._tautology, on sqlglot's tree."""
    if isinstance(node, exp.Paren):
        return _tautology(node.this, names)
    if not _references(node, names):
        return True
    if isinstance(node, exp.Or | exp.And):
        left, right = node.left, node.right
        if not isinstance(left, exp.Expression) or not isinstance(right, exp.Expression):
            return False
        if isinstance(node, exp.And):
            return _tautology(left, names) and _tautology(right, names)
        return _tautology(left, names) or _tautology(right, names) or _opposites(node)
    if isinstance(node, exp.EQ | exp.GTE | exp.LTE | exp.NullSafeEQ):
        return bool(node.this == node.expression)
    if isinstance(node, exp.Like):
        pattern = node.expression
        return isinstance(pattern, exp.Literal) and set(pattern.this) == {"%"}
    return False


def _opposites(node: exp.Or) -> bool:
    """``x IS NULL OR x IS NOT NULL`` or ``e OR NOT e`` (flattened OR terms)."""
    terms = list(node.flatten())
    for term in terms:
        if isinstance(term, exp.Not) and any(term.this == other for other in terms):
            return True
    return False


def _filter_tags(kind: str, where: exp.Expression | None, names: frozenset[str]) -> tuple[str, ...]:
    if where is None:
        return unfiltered_tags(kind)
    condition = where.this if isinstance(where, exp.Where) else where
    if isinstance(condition, exp.Expression) and _tautology(condition, names):
        return unfiltered_tags(kind, TAUTOLOGY)
    return ()


def _statement(node: exp.Expression, dialect: str) -> list[Part]:
    """The parts of one statement (and of the DML nested in it)."""
    if isinstance(node, exp.Query):
        parts = [_select(node)]
    elif isinstance(node, exp.Delete):
        table = node.this
        tags = _filter_tags("DELETE", node.args.get("where"), _target_names(table))
        parts = [Part("DELETE", Verb.DELETE, "sql:table", _table_name(table), tags)]
    elif isinstance(node, exp.Update):
        table = node.this
        tags = _filter_tags("UPDATE", node.args.get("where"), _target_names(table))
        parts = [Part("UPDATE", Verb.UPDATE, "sql:table", _table_name(table), tags)]
    elif isinstance(node, exp.Insert):
        name = _table_name(node.this)
        if node.args.get("overwrite"):
            parts = [Part("INSERT OVERWRITE", Verb.DELETE, "sql:table", name, ("truncate",))]
        else:
            parts = [Part("INSERT", Verb.CREATE, "sql:table", name)]
    elif isinstance(node, exp.Merge):
        parts = _merge(node)
    elif isinstance(node, exp.TruncateTable):
        tables = node.expressions
        bulk: tuple[str, ...] = ("truncate", "bulk") if len(tables) > 1 else ("truncate",)
        parts = [Part("TRUNCATE", Verb.DELETE, "sql:table", _table_name(t), bulk) for t in tables]
    elif isinstance(node, exp.Drop):
        parts = _drop(node)
    elif isinstance(node, exp.Create):
        parts = _create(node)
    elif isinstance(node, exp.Alter):
        parts = _alter(node)
    elif isinstance(node, exp.Grant | exp.Revoke):
        operation = "GRANT" if isinstance(node, exp.Grant) else "REVOKE"
        securable = node.args.get("securable")
        kind = str(node.args.get("kind") or "").upper()
        rtype = "sql:" + _CONTAINERS.get(kind, kind.lower() or "table") if securable else ""
        parts = [Part(operation, Verb.PERMISSION, rtype, _table_name(securable))]
    elif isinstance(node, exp.LoadData):
        name = _table_name(node.this)
        if node.args.get("overwrite"):
            parts = [Part("LOAD DATA", Verb.DELETE, "sql:table", name, ("truncate",))]
        else:
            parts = [Part("LOAD DATA", Verb.CREATE, "sql:table", name)]
    elif isinstance(node, exp.Copy):
        # COPY INTO <table> FROM <files> loads; COPY INTO @stage FROM <table> unloads.
        name = _table_name(node.this)
        if name.startswith("@"):
            parts = [Part("COPY INTO", Verb.READ, "sql:stage", name, ("export",))]
        else:
            parts = [Part("COPY INTO", Verb.CREATE, "sql:table", name)]
    elif isinstance(node, exp.Export):
        parts = [Part("EXPORT DATA", Verb.READ, tags=("export",))]
    elif isinstance(node, exp.Undrop):
        kind = str(node.args.get("kind") or "TABLE").upper()
        rtype = "sql:" + _CONTAINERS.get(kind, kind.lower())
        parts = [Part(f"UNDROP {kind}", Verb.CREATE, rtype, _table_name(node.this))]
    elif isinstance(node, _READ_STATEMENTS):
        parts = [Part(type(node).__name__.upper(), Verb.READ)]
    elif isinstance(node, exp.Refresh | exp.Analyze | exp.Put):
        name = _table_name(node.this)
        parts = [Part(type(node).__name__.upper(), Verb.UPDATE, "sql:table", name)]
    elif isinstance(node, exp.Command):
        parts = [_command(node)]
    else:
        # A bare expression or a statement class not read here: not classified.
        parts = [Part(type(node).__name__.upper(), Verb.UNKNOWN, tags=("unclassified-statement",))]
    for nested in node.find_all(exp.Delete, exp.Update, exp.Insert, exp.Merge):
        if nested is not node:
            parts.extend(_statement(nested, dialect))
    return parts


def _select(node: exp.Query) -> Part:
    source = node.args.get("from_") or node.args.get("from")
    table = source.this if isinstance(source, exp.From) else None
    name = _table_name(table) if isinstance(table, exp.Table) else ""
    return Part("SELECT", Verb.READ, "sql:table" if name else "", name)


def _merge(node: exp.Merge) -> list[Part]:
    table = node.this
    name = _table_name(table)
    names = _target_names(table)
    condition = node.args.get("on")
    join_all = condition is None or _tautology(condition, names)
    whens = node.args.get("whens")
    clauses = whens.expressions if isinstance(whens, exp.Whens) else []
    parts: list[Part] = []
    for when in clauses:
        then = when.args.get("then")
        if isinstance(then, exp.Var) and then.name.upper() == "DELETE":
            verb, kind = Verb.DELETE, "DELETE"
        elif isinstance(then, exp.Update):
            verb, kind = Verb.UPDATE, "UPDATE"
        else:
            parts.append(Part("MERGE", Verb.CREATE, "sql:table", name))
            continue
        extra = when.args.get("condition")
        every = join_all and (extra is None or _tautology(extra, names))
        tags = unfiltered_tags(kind, TAUTOLOGY) if every else ()
        if when.args.get("source"):
            tags = (*tags, "not-matched-by-source")
        parts.append(Part("MERGE", verb, "sql:table", name, tags))
    return parts or [Part("MERGE", Verb.UPDATE, "sql:table", name)]


def _drop(node: exp.Drop) -> list[Part]:
    kind = str(node.args.get("kind") or "").upper()
    rtype = "sql:" + _CONTAINERS.get(kind, kind.lower().replace(" ", "-"))
    cascade = bool(node.args.get("cascade"))
    if kind in _PERMISSION_KINDS:
        verb = Verb.PERMISSION
    elif kind in _DROP_DESTROYS or cascade:
        verb = Verb.DESTROY
    else:
        verb = Verb.DELETE
    objects = node.args.get("tables") or ([node.this] if node.this else [])
    tags = tuple(t for t, on in (("bulk", len(objects) > 1), ("cascade", cascade)) if on)
    names = [_table_name(o) for o in objects] or [""]
    return [Part(f"DROP {kind}".strip(), verb, rtype, n, tags) for n in names]


def _create(node: exp.Create) -> list[Part]:
    kind = str(node.args.get("kind") or "").upper()
    rtype = "sql:" + _CONTAINERS.get(kind, kind.lower().replace(" ", "-"))
    name = _table_name(node.this)
    operation = f"CREATE {kind}".strip()
    if kind in _PERMISSION_KINDS:
        return [Part(operation, Verb.PERMISSION, rtype, name)]
    if node.args.get("replace"):
        # CREATE OR REPLACE drops what was there: a table's data, a schema's tables.
        verb = Verb.DESTROY if kind in _DROP_DESTROYS else Verb.UPDATE
        return [Part(operation, verb, rtype, name, ("replace",))]
    return [Part(operation, Verb.CREATE, rtype, name)]


def _alter(node: exp.Alter) -> list[Part]:
    kind = str(node.args.get("kind") or "TABLE").upper()
    rtype = "sql:" + _CONTAINERS.get(kind, kind.lower())
    name = _table_name(node.this)
    operation = f"ALTER {kind}"
    parts: list[Part] = []
    for action in node.args.get("actions") or []:
        if isinstance(action, exp.DropPartition):
            parts.append(Part(operation, Verb.DELETE, rtype, name, ("drop-partition",)))
        elif isinstance(action, exp.Drop):
            dropped = str(action.args.get("kind") or "").upper()
            if dropped == "COLUMN":
                parts.append(Part(operation, Verb.DESTROY, rtype, name, ("drop-column",)))
            else:
                parts.append(Part(operation, Verb.UPDATE, rtype, name, ("drop-constraint",)))
        elif isinstance(action, exp.SwapTable):
            parts.append(Part(operation, Verb.UPDATE, rtype, name, ("swap",)))
        else:
            parts.append(Part(operation, Verb.UPDATE, rtype, name))
    return parts or [Part(operation, Verb.UPDATE, rtype, name)]


def _command(node: exp.Command) -> Part:
    """A statement sqlglot could not parse: its head says how bad it can be at most."""
    head = str(node.this or "").upper()
    if head in _COMMAND_HEADS:
        verb, tags = _COMMAND_HEADS[head]
        return Part(head, verb, tags=(*tags, "unparsed"))
    return Part(head or "UNPARSED", Verb.UNKNOWN, tags=("unparsed",))


def _functions(node: exp.Expression, dialect: str, defined: set[str]) -> list[Part]:
    parts: list[Part] = []
    for call in node.find_all(exp.Anonymous):
        name = str(call.name)
        parent = call.parent
        qualifier = ""
        if isinstance(parent, exp.Dot) and parent.expression is call:
            qualifier = parent.this.sql(dialect=dialect)
        qualified = f"{qualifier}.{name}" if qualifier else name
        system = dialect == "snowflake" and name.upper().startswith("SYSTEM$")
        if qualifier or system or name.lower() in defined:
            parts.append(Part("CALL", Verb.EXECUTE, "sql:function", qualified, ("function-call",)))
    return parts

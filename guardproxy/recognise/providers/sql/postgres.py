"""PostgreSQL statements, read with PostgreSQL's own parser (pglast: libpg_query).

``PostgresReader.read(text)`` parses ``text`` exactly as the server's parser does
(comments, nested comments, dollar quoting, ``E''`` strings, ``U&`` identifiers are the
parser's business, not ours) and classifies every statement from its parse tree:

* every top-level statement is a :class:`Part`; operations a statement performs inside
  itself are parts too: a data-modifying CTE (``WITH gone AS (DELETE ...) SELECT``), the
  query of ``COPY (...) TO``, ``EXPLAIN ANALYZE``'s statement, a function called anywhere
  in the tree that PostgreSQL does not declare free of side effects;
* a ``DELETE``/``UPDATE``/``MERGE`` is unfiltered when its WHERE (or ``ON``) is absent, does
  not depend on the target's row, or is true for every row (:func:`_tautology`);
* dynamic SQL (``DO``, ``EXECUTE`` of a statement not prepared in the same request, SQL in
  a non-constant argument of ``dblink_exec``...) and server-side programs (``COPY ...
  PROGRAM``, ``COPY ... TO`` a server file, ``LOAD``, ``ALTER SYSTEM`` of a ``*_command``)
  are destroys tagged ``dynamic-sql`` / ``server-program``: nothing shows what they do;
* a statement type this module does not know is ``unknown`` (fail closed).

The parser assumes ``standard_conforming_strings = on`` (the default since 9.1). A
server, database, role or an earlier ``SET`` can turn it off, and then ``'a\\'; DROP
TABLE x; --'`` is one string, not two statements; when the text has a backslash the
reader also parses it as that server would (:func:`_escape_string_reading`) and keeps
the statements of both readings.

A function's name resolves to ``pg_catalog`` first unless ``search_path`` names
``pg_catalog`` later; a request that changes ``search_path`` (``SET``, ``set_config``)
makes every unqualified function after it untrusted (``execute``). What the catalog
holds beyond the request (a trigger, a view calling a volatile function, a
``search_path`` set on the role) cannot be seen from the request and is not judged here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from pglast import parser as _pg

from guardproxy.action import Verb
from guardproxy.recognise.providers.sql.statement import (
    DYNAMIC,
    TAUTOLOGY,
    Part,
    SqlError,
    unfiltered_tags,
)

__all__ = ["PostgresReader", "parse_tree", "side_effect_free"]

Node = dict[str, Any]
_BRANCHES = (dict, list)  # a tuple: `dict | list` would build a union object per test

_MAX_ESCAPE_REWRITES = 64
_ESCAPE_TAG = "ambiguous:standard-conforming-strings"


@cache
def side_effect_free() -> frozenset[str]:
    """Built-in function names PostgreSQL declares IMMUTABLE or STABLE (all overloads),
    from ``data/pg_functions.json`` (see ``sql_postgres_catalog.py``)."""
    text = resources.files("guardproxy.recognise").joinpath("data/pg_functions.json")
    data = json.loads(text.read_text(encoding="utf-8"))
    return frozenset(data["side_effect_free"]) | _VOLATILE_READS


# Volatile built-ins that only read or touch session state (random numbers, the clock,
# advisory locks, sizes and statistics, server files read): a SELECT of them is a read.
_VOLATILE_READS = frozenset(
    [
        "random",
        "random_normal",
        "setseed",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "clock_timestamp",
        "timeofday",
        "currval",
        "lastval",
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        "current_query",
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_advisory_unlock",
        "pg_advisory_unlock_all",
        "pg_advisory_unlock_shared",
        "pg_advisory_xact_lock",
        "pg_advisory_xact_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
        "pg_try_advisory_xact_lock",
        "pg_try_advisory_xact_lock_shared",
        "pg_blocking_pids",
        "pg_safe_snapshot_blocking_pids",
        "pg_isolation_test_session_is_blocked",
        "pg_lock_status",
        "pg_database_size",
        "pg_relation_size",
        "pg_table_size",
        "pg_total_relation_size",
        "pg_indexes_size",
        "pg_tablespace_size",
        "pg_is_in_recovery",
        "pg_is_wal_replay_paused",
        "pg_get_wal_replay_pause_state",
        "pg_current_wal_lsn",
        "pg_current_wal_flush_lsn",
        "pg_current_wal_insert_lsn",
        "pg_last_wal_receive_lsn",
        "pg_last_wal_replay_lsn",
        "pg_last_xact_replay_timestamp",
        "pg_last_committed_xact",
        "pg_xact_commit_timestamp",
        "pg_xact_commit_timestamp_origin",
        "pg_xact_status",
        "txid_status",
        "pg_prepared_xact",
        "pg_notification_queue_usage",
        "pg_control_checkpoint",
        "pg_control_init",
        "pg_control_recovery",
        "pg_control_system",
        "pg_current_logfile",
        "pg_get_backend_memory_contexts",
        "pg_get_shmem_allocations",
        "pg_get_wal_resource_managers",
        "pg_get_multixact_members",
        "pg_hba_file_rules",
        "pg_ident_file_mappings",
        "pg_show_all_file_settings",
        "pg_jit_available",
        "pg_partition_ancestors",
        "pg_partition_tree",
        "pg_sequence_last_value",
        "pg_stat_have_stats",
        "pg_stat_get_recovery_prefetch",
        "pg_stat_get_xact_blocks_fetched",
        "pg_stat_get_xact_blocks_hit",
        "pg_stat_get_xact_function_calls",
        "pg_stat_get_xact_function_self_time",
        "pg_stat_get_xact_function_total_time",
        "pg_stat_get_xact_numscans",
        "pg_stat_get_xact_tuples_deleted",
        "pg_stat_get_xact_tuples_fetched",
        "pg_stat_get_xact_tuples_hot_updated",
        "pg_stat_get_xact_tuples_inserted",
        "pg_stat_get_xact_tuples_returned",
        "pg_stat_get_xact_tuples_updated",
        "pg_show_replication_origin_status",
        "pg_replication_origin_progress",
        "pg_replication_origin_session_is_setup",
        "pg_replication_origin_session_progress",
        "pg_collation_actual_version",
        "pg_database_collation_actual_version",
        "pg_export_snapshot",
        "pg_logical_slot_peek_changes",
        "pg_logical_slot_peek_binary_changes",
        "lo_get",
        "loread",
        "lo_open",
        "lo_close",
        "lo_lseek",
        "lo_lseek64",
        "lo_tell",
        "lo_tell64",
        "pg_read_file",
        "pg_read_file_old",
        "pg_read_binary_file",
        "pg_stat_file",
        "pg_ls_dir",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_archive_statusdir",
        "pg_ls_tmpdir",
        "pg_ls_logicalmapdir",
        "pg_ls_logicalsnapdir",
        "pg_ls_replslotdir",
    ]
)

# Volatile built-ins (and well-known extension functions) with effects, by what they do.
_EFFECTS: dict[str, tuple[Verb, tuple[str, ...]]] = {
    "lo_unlink": (Verb.DELETE, ("large-object",)),
    "lo_truncate": (Verb.DELETE, ("large-object",)),
    "lo_truncate64": (Verb.DELETE, ("large-object",)),
    "lo_export": (Verb.DESTROY, ("server-file",)),  # writes any file the server can
    "lo_import": (Verb.CREATE, ("server-file", "large-object")),
    "lo_creat": (Verb.CREATE, ("large-object",)),
    "lo_create": (Verb.CREATE, ("large-object",)),
    "lo_from_bytea": (Verb.CREATE, ("large-object",)),
    "lo_put": (Verb.UPDATE, ("large-object",)),
    "lowrite": (Verb.UPDATE, ("large-object",)),
    "pg_file_write": (Verb.DESTROY, ("server-file",)),  # adminpack
    "pg_file_unlink": (Verb.DESTROY, ("server-file",)),
    "pg_file_rename": (Verb.DESTROY, ("server-file",)),
    "pg_terminate_backend": (Verb.EXECUTE, ("terminate",)),
    "pg_cancel_backend": (Verb.EXECUTE, ("terminate",)),
    "pg_promote": (Verb.EXECUTE, ("promote",)),
    "pg_drop_replication_slot": (Verb.DELETE, ("replication",)),
    "pg_replication_origin_drop": (Verb.DELETE, ("replication",)),
    "pg_logical_slot_get_changes": (Verb.DELETE, ("replication",)),  # consumes them
    "pg_logical_slot_get_binary_changes": (Verb.DELETE, ("replication",)),
    "pg_create_logical_replication_slot": (Verb.CREATE, ("replication",)),
    "pg_create_physical_replication_slot": (Verb.CREATE, ("replication",)),
    "pg_copy_logical_replication_slot": (Verb.CREATE, ("replication",)),
    "pg_copy_physical_replication_slot": (Verb.CREATE, ("replication",)),
    "pg_replication_origin_create": (Verb.CREATE, ("replication",)),
    "pg_replication_slot_advance": (Verb.UPDATE, ("replication",)),
    "pg_replication_origin_advance": (Verb.UPDATE, ("replication",)),
    "pg_stat_reset": (Verb.UPDATE, ("statistics-reset",)),
    "pg_stat_reset_shared": (Verb.UPDATE, ("statistics-reset",)),
    "pg_stat_reset_single_table_counters": (Verb.UPDATE, ("statistics-reset",)),
    "pg_stat_reset_single_function_counters": (Verb.UPDATE, ("statistics-reset",)),
    "pg_stat_reset_slru": (Verb.UPDATE, ("statistics-reset",)),
    "pg_stat_reset_replication_slot": (Verb.UPDATE, ("statistics-reset",)),
    "pg_stat_reset_subscription_stats": (Verb.UPDATE, ("statistics-reset",)),
    "nextval": (Verb.UPDATE, ("sequence",)),
    "setval": (Verb.UPDATE, ("sequence",)),
    "pg_reload_conf": (Verb.UPDATE, ("server-config",)),
    "pg_rotate_logfile": (Verb.UPDATE, ()),
    "pg_switch_wal": (Verb.UPDATE, ()),
    "pg_create_restore_point": (Verb.UPDATE, ()),
    "pg_notify": (Verb.UPDATE, ()),
    "pg_wal_replay_pause": (Verb.UPDATE, ("replication",)),
    "pg_wal_replay_resume": (Verb.UPDATE, ("replication",)),
    "pg_backup_start": (Verb.UPDATE, ()),
    "pg_backup_stop": (Verb.UPDATE, ()),
}

# Functions that run SQL text given as an argument (the index of that argument; dblink's
# depends on its optional arguments, see _sql_argument): the text is read like the request.
_SQL_ARGUMENT: dict[str, int] = {
    "dblink": -1,  # dblink([conn,] sql [, fail_on_error]): see _sql_argument
    "dblink_exec": -1,
    "dblink_send_query": -1,
    "dblink_open": -1,
    "query_to_xml": 0,
    "query_to_xmlschema": 0,
    "query_to_xml_and_xmlschema": 0,
    "ts_stat": 0,
    "ts_rewrite": 1,
}
_DBLINK = frozenset({"dblink", "dblink_exec", "dblink_send_query", "dblink_open"})

_DML = frozenset({"DeleteStmt", "UpdateStmt", "InsertStmt", "MergeStmt"})
_NESTED = _DML | {"FuncCall"}

# Statements that define code for later without running any of it now: their bodies are
# not walked (what they arm is judged when it is called, or, for a rule, see RuleStmt).
_DEFINITIONS = frozenset(
    {
        "CreateFunctionStmt",
        "ViewStmt",
        "CreateTrigStmt",
        "CreatePolicyStmt",
        "AlterPolicyStmt",
        "CreateStmt",
        "CreateDomainStmt",
        "PrepareStmt",
        "ExplainStmt",
        "CreateSchemaStmt",
        "RuleStmt",
        "ExecuteStmt",
    }
)

_DROP_DESTROYS = frozenset({"OBJECT_TABLE", "OBJECT_SCHEMA", "OBJECT_MATVIEW"})
_DROP_PERMISSION = frozenset({"OBJECT_POLICY", "OBJECT_ROLE", "OBJECT_USER_MAPPING"})
_OBJECT_WORDS = {
    "OBJECT_MATVIEW": "MATERIALIZED VIEW",
    "OBJECT_FDW": "FOREIGN DATA WRAPPER",
    "OBJECT_FOREIGN_SERVER": "SERVER",
    "OBJECT_TSCONFIGURATION": "TEXT SEARCH CONFIGURATION",
    "OBJECT_TSDICTIONARY": "TEXT SEARCH DICTIONARY",
    "OBJECT_TSPARSER": "TEXT SEARCH PARSER",
    "OBJECT_TSTEMPLATE": "TEXT SEARCH TEMPLATE",
    "OBJECT_EVENT_TRIGGER": "EVENT TRIGGER",
    "OBJECT_ACCESS_METHOD": "ACCESS METHOD",
    "OBJECT_OPCLASS": "OPERATOR CLASS",
    "OBJECT_OPFAMILY": "OPERATOR FAMILY",
}
_PERMISSION_STATEMENTS = frozenset(
    {
        "GrantRoleStmt",
        "CreateRoleStmt",
        "AlterRoleStmt",
        "AlterRoleSetStmt",
        "DropRoleStmt",
        "AlterDefaultPrivilegesStmt",
        "AlterOwnerStmt",
        "CreatePolicyStmt",
        "AlterPolicyStmt",
        "CreateUserMappingStmt",
        "AlterUserMappingStmt",
        "DropUserMappingStmt",
        "ReassignOwnedStmt",
        "SecLabelStmt",
    }
)
_READ_STATEMENTS = frozenset(
    {
        "VariableShowStmt",
        "DiscardStmt",
        "ListenStmt",
        "UnlistenStmt",
        "FetchStmt",
        "ClosePortalStmt",
        "DeallocateStmt",
        "ConstraintsSetStmt",
    }
)
_UPDATE_STATEMENTS = frozenset(
    {
        "VacuumStmt",
        "ClusterStmt",
        "ReindexStmt",
        "RefreshMatViewStmt",
        "CommentStmt",
        "CheckPointStmt",
        "NotifyStmt",
        "LockStmt",
        "AlterObjectSchemaStmt",
        "AlterSeqStmt",
    }
)
_COMMAND_SUFFIX = re.compile(r"Stmt$")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _words(node_type: str) -> str:
    """``AlterForeignServerStmt`` -> ``ALTER FOREIGN SERVER`` (a readable operation)."""
    return _CAMEL.sub(" ", _COMMAND_SUFFIX.sub("", node_type)).upper()


@cache
def _handler_name(node_type: str) -> str:
    """``DeleteStmt`` -> ``_delete_stmt``: the reader's method for a statement type."""
    return "_" + _CAMEL.sub("_", node_type).lower()


def parse_tree(text: str) -> list[Node]:
    """The raw statements of ``text`` as libpg_query's JSON parse tree."""
    return _parse(text)[0]


def _parse(text: str) -> tuple[list[Node], bool]:
    """(statements, whether any holds a function call or a nested DML statement).

    The second is read off the JSON text (a key is ``"FuncCall"``; inside a string
    literal the quotes are escaped), so statements without either are not walked.
    """
    try:
        raw = _pg.parse_sql_json(text)
    except _pg.ParseError as exc:
        raise SqlError(f"PostgreSQL cannot parse it: {str(exc)[:120]}") from exc
    statements = [item["stmt"] for item in json.loads(raw).get("stmts", [])]
    top_level = sum(next(iter(s)) in _DML for s in statements)
    nested = '"FuncCall"' in raw or sum(raw.count(f'"{k}"') for k in _DML) > top_level
    return statements, nested


def _escape_string_reading(text: str) -> str | None:
    """``text`` as a server with ``standard_conforming_strings = off`` lexes it: there a
    plain ``'...'`` literal takes backslash escapes like ``E'...'``. Literals are found
    left to right with the parser's own scanner, each one holding a backslash is made an
    ``E''`` literal, and the text is scanned again from there (lexing after it changes).

    ``None`` when it cannot be done (a scan fails, or more than a few dozen rewrites).
    """
    out, position = text, 0
    for _ in range(_MAX_ESCAPE_REWRITES):
        tokens = _tokens(out)
        if tokens is None:
            return None
        literal = next(
            (
                t
                for t in tokens
                if t.start >= position
                and t.name == "SCONST"
                and out[t.start] == "'"
                and "\\" in out[t.start : t.end + 1]
            ),
            None,
        )
        if literal is None:
            return out
        out = f"{out[: literal.start]} E{out[literal.start :]}"
        position = literal.start + 2
    return None


def _tokens(text: str) -> list[Any] | None:
    """The scanner's tokens of ``text``; when the scanner stops at an error (an
    unterminated literal in this reading), the tokens before it, which it lexed as the
    server would. ``None`` if even those cannot be had."""
    try:
        return list(_pg.scan(text))
    except _pg.ParseError as exc:
        where = exc.args[1] if len(exc.args) > 1 else None
        if not isinstance(where, int) or where <= 0:
            return None
    try:
        return list(_pg.scan(text[:where]))
    except _pg.ParseError:
        return None


def _strip_locations(node: Any) -> Any:
    """A parse tree without source positions: two spellings of one expression compare
    equal (``id = id``; the second statement list of an ambiguous text)."""
    if isinstance(node, dict):
        return {k: _strip_locations(v) for k, v in node.items() if "location" not in k}
    if isinstance(node, list):
        return [_strip_locations(v) for v in node]
    return node


def _nested(node: Any) -> Iterator[tuple[str, Node]]:
    """Every DML statement and function call anywhere below ``node``, in tree order."""
    stack: list[Any] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            children = []
            for key, value in current.items():
                if key in _NESTED:
                    yield key, value
                if isinstance(value, _BRANCHES):
                    children.append(value)
            stack.extend(reversed(children))
        elif isinstance(current, list):
            stack.extend(reversed(current))


def _sval(node: Any) -> str:
    """The text of a ``String`` node (or ``""``)."""
    if isinstance(node, dict) and "String" in node:
        return str(node["String"].get("sval", ""))
    return ""


def _dotted(items: list[Any]) -> str:
    return ".".join(s for s in (_sval(i) for i in items) if s)


def _relation(range_var: Any) -> str:
    """``schema.table`` of a RangeVar as the parser resolved it (unquoted names folded)."""
    if not isinstance(range_var, dict):
        return ""
    if "RangeVar" in range_var:
        range_var = range_var["RangeVar"]
    parts = [range_var.get(k, "") for k in ("catalogname", "schemaname", "relname")]
    return ".".join(p for p in parts if p)


def _object_name(node: Any) -> str:
    """The name of a DROP/GRANT/COMMENT object node, whatever its shape."""
    if not isinstance(node, dict):
        return ""
    if "List" in node:
        return _dotted(node["List"].get("items", []))
    if "String" in node:
        return _sval(node)
    if "ObjectWithArgs" in node:
        return _dotted(node["ObjectWithArgs"].get("objname", []))
    if "TypeName" in node:
        return _dotted(node["TypeName"].get("names", []))
    if "RangeVar" in node:
        return _relation(node)
    if "RoleSpec" in node:
        return str(node["RoleSpec"].get("rolename", ""))
    if "AccessPriv" in node:
        return str(node["AccessPriv"].get("priv_name", ""))
    return ""


def _constant(node: Any) -> Any:
    """The value of a constant (``A_Const``, possibly cast), or ``None``."""
    if not isinstance(node, dict):
        return None
    if "TypeCast" in node:
        return _constant(node["TypeCast"].get("arg"))
    const = node.get("A_Const")
    if not isinstance(const, dict) or const.get("isnull"):
        return None
    # libpg_query's JSON leaves out zero values: {"ival": {}} is 0, {"boolval": {}} false.
    for kind, zero in (("sval", ""), ("ival", 0), ("fval", "0"), ("boolval", False), ("bsval", "")):
        if kind in const:
            return const[kind].get(kind, zero)
    return None


def _option_runs(element: Node) -> bool:
    """Whether a boolean statement option (``ANALYZE`` of EXPLAIN) is on: no value is
    on, and only PostgreSQL's spellings of off (``false``, ``off``, ``0``) are off."""
    if "arg" not in element:
        return True
    arg = element["arg"]
    if not isinstance(arg, dict):
        return True
    if "Integer" in arg:
        return bool(arg["Integer"].get("ival", 0) != 0)
    if "Boolean" in arg:
        return bool(arg["Boolean"].get("boolval", False))
    return _sval(arg).lower() not in ("false", "off", "0")


# ------------------------------------------------------------------ WHERE clauses


def _references(node: Any, names: frozenset[str], inside_subquery: bool = False) -> bool:
    """Whether ``node`` reads a column of the target row.

    An unqualified column outside a subquery is the target's (or a joined table's: read
    as the target's, which only ever makes the clause look filtered when it might not be
    — see below). Inside a subquery an unqualified column is taken as the subquery's own;
    only a qualified one naming the target (``t.id``) correlates it. ``WHERE CURRENT OF``
    names one row.
    """
    stack: list[tuple[Any, bool]] = [(node, inside_subquery)]
    while stack:
        current, sub = stack.pop()
        if isinstance(current, list):
            stack.extend((item, sub) for item in current)
            continue
        if not isinstance(current, dict):
            continue
        if "CurrentOfExpr" in current:
            return True
        ref = current.get("ColumnRef")
        if isinstance(ref, dict):
            fields = ref.get("fields", [])
            if len(fields) == 1 and not sub:
                return True
            if len(fields) >= 2:
                qualifier = ".".join(_sval(f) for f in fields[:-1])
                if qualifier in names or _sval(fields[-2]) in names:
                    return True
            continue
        for key, value in current.items():
            if isinstance(value, _BRANCHES):
                stack.append((value, sub or key == "subselect"))
    return False


def _tautology(node: Any, names: frozenset[str]) -> bool:
    """Whether a WHERE/ON condition selects every row of the target: it does not read the
    target's row at all (``1 = 1``, ``'yes'``, ``$1``, ``random() < 0.5``, ``EXISTS
    (SELECT 1 FROM other)``: all rows or none), compares an expression with itself
    (``id = id``), tests a value and its opposite (``x IS NULL OR x IS NOT NULL``), or is
    an OR with such a branch or an AND of only such terms."""
    if not _references(node, names):
        return True
    if not isinstance(node, dict):
        return False
    boolean = node.get("BoolExpr")
    if isinstance(boolean, dict):
        args = boolean.get("args", [])
        if boolean.get("boolop") == "OR_EXPR":
            return any(_tautology(a, names) for a in args) or _complementary(args)
        if boolean.get("boolop") == "AND_EXPR":
            return all(_tautology(a, names) for a in args)
        return False
    expr = node.get("A_Expr")
    if isinstance(expr, dict):
        kind = expr.get("kind")
        operator = _sval((expr.get("name") or [None])[-1])
        same = _strip_locations(expr.get("lexpr")) == _strip_locations(expr.get("rexpr"))
        if kind == "AEXPR_OP" and operator in ("=", ">=", "<=") and same:
            return True
        if kind == "AEXPR_NOT_DISTINCT" and same:
            return True
        if kind in ("AEXPR_LIKE", "AEXPR_ILIKE") and operator in ("~~", "~~*"):
            pattern = _constant(expr.get("rexpr"))
            return isinstance(pattern, str) and pattern != "" and set(pattern) == {"%"}
    return False


def _complementary(args: list[Any]) -> bool:
    """An OR holding ``x IS NULL`` and ``x IS NOT NULL``, or ``e`` and ``NOT e``."""
    nulls: dict[str, set[str]] = {}
    plain: set[str] = set()
    negated: set[str] = set()
    for arg in args:
        if not isinstance(arg, dict):
            continue
        if "NullTest" in arg:
            test = arg["NullTest"]
            key = json.dumps(_strip_locations(test.get("arg")), sort_keys=True)
            nulls.setdefault(key, set()).add(str(test.get("nulltesttype")))
            continue
        boolean = arg.get("BoolExpr")
        if isinstance(boolean, dict) and boolean.get("boolop") == "NOT_EXPR":
            negated.add(json.dumps(_strip_locations(boolean.get("args")), sort_keys=True))
        plain.add(json.dumps(_strip_locations([arg]), sort_keys=True))
    return any(len(kinds) == 2 for kinds in nulls.values()) or len(plain & negated) > 0


def _filter_tags(kind: str, where: Any, names: frozenset[str]) -> tuple[str, ...]:
    if where is None:
        return unfiltered_tags(kind)
    if _tautology(where, names):
        return unfiltered_tags(kind, TAUTOLOGY)
    return ()


def _target_names(relation: Any) -> frozenset[str]:
    """The names a WHERE clause can use for the target: its alias if it has one (then
    PostgreSQL refuses the table's own name), else the table and ``schema.table``."""
    if not isinstance(relation, dict):
        return frozenset()
    alias = relation.get("alias")
    if isinstance(alias, dict) and alias.get("aliasname"):
        return frozenset({alias["aliasname"]})
    names = {relation.get("relname", ""), _relation(relation)}
    return frozenset(n for n in names if n)


# ------------------------------------------------------------------ the reader


@dataclass
class PostgresReader:
    """Reads the statements of one request (its texts run in one session, in order: a
    ``PREPARE`` or a ``SET search_path`` in one text affects the next)."""

    prepared: dict[str, list[Part]] = field(default_factory=dict)
    search_path_changed: bool = False
    ambiguity: list[str] = field(default_factory=list)

    def read(self, text: str) -> list[Part]:
        """The parts of ``text``; raises :class:`SqlError` if PostgreSQL cannot parse it
        (under either reading of backslashes in string literals)."""
        primary: list[Node] | None
        walk = True
        try:
            primary, walk = _parse(text)
        except SqlError:
            primary = None
        alternative: list[Node] | None = None
        if "\\" in text:
            escaped = _escape_string_reading(text)
            if escaped is None:
                self.ambiguity.append(_ESCAPE_TAG)
                return [*self._statements(primary or []), _unreadable(_ESCAPE_TAG)]
            if escaped != text:
                try:
                    alternative = parse_tree(escaped)
                except SqlError:
                    alternative = None  # that server refuses the text: nothing runs there
        if primary is None and alternative is None:
            raise SqlError("PostgreSQL cannot parse the SQL text")
        if alternative is None or (
            primary is not None and _strip_locations(alternative) == _strip_locations(primary)
        ):
            return self._statements(primary or [], walk=walk or alternative is not None)
        self.ambiguity.append(_ESCAPE_TAG)
        first = self._statements(primary) if primary is not None else []
        return [*first, *self._statements(alternative)]

    def _statements(self, statements: list[Node], *, walk: bool = True) -> list[Part]:
        parts: list[Part] = []
        for statement in statements:
            parts.extend(self.statement(statement, walk=walk))
        return parts

    def statement(self, wrapped: Node, *, walk: bool = True) -> list[Part]:
        """The parts of one statement node (``{"DeleteStmt": {...}}``); ``walk=False``
        when the text is known to hold no function call or nested DML."""
        ((node_type, body),) = wrapped.items()
        own = self._own(node_type, body)
        if node_type in _DEFINITIONS or not walk:
            return own
        parts = list(own)
        for nested_type, nested in _nested(body):
            if nested_type == "FuncCall":
                parts.extend(self._function(nested))
            else:
                parts.extend(self._own(nested_type, nested))
        return parts

    # -------------------------------------------------------------- one statement

    def _own(self, node_type: str, body: Node) -> list[Part]:
        handler = getattr(self, _handler_name(node_type), None)
        if handler is not None:
            return handler(body)  # type: ignore[no-any-return]
        if node_type in _PERMISSION_STATEMENTS:
            return [Part(_words(node_type), Verb.PERMISSION)]
        if node_type in _READ_STATEMENTS:
            return [Part(_words(node_type), Verb.READ)]
        if node_type in _UPDATE_STATEMENTS:
            return [Part(_words(node_type), Verb.UPDATE)]
        if node_type.startswith("Create") or node_type == "DefineStmt":
            return [Part(_words(node_type), Verb.CREATE)]
        if node_type.startswith("Alter"):
            return [Part(_words(node_type), Verb.UPDATE)]
        if node_type.startswith("Drop"):
            return [Part(_words(node_type), Verb.DELETE)]
        return [Part(_words(node_type), Verb.UNKNOWN, tags=("unclassified-statement",))]

    def _select_stmt(self, body: Node) -> list[Part]:
        into = body.get("intoClause")
        if isinstance(into, dict):
            return [Part("SELECT INTO", Verb.CREATE, "sql:table", _relation(into.get("rel")))]
        source = next(iter(body.get("fromClause") or []), None)
        name = _relation(source) if isinstance(source, dict) and "RangeVar" in source else ""
        return [Part("SELECT", Verb.READ, "sql:table" if name else "", name)]

    def _delete_stmt(self, body: Node) -> list[Part]:
        relation = body.get("relation")
        tags = _filter_tags("DELETE", body.get("whereClause"), _target_names(relation))
        return [Part("DELETE", Verb.DELETE, "sql:table", _relation(relation), tags)]

    def _update_stmt(self, body: Node) -> list[Part]:
        relation = body.get("relation")
        tags = _filter_tags("UPDATE", body.get("whereClause"), _target_names(relation))
        return [Part("UPDATE", Verb.UPDATE, "sql:table", _relation(relation), tags)]

    def _insert_stmt(self, body: Node) -> list[Part]:
        name = _relation(body.get("relation"))
        conflict = body.get("onConflictClause")
        if isinstance(conflict, dict) and conflict.get("action") == "ONCONFLICT_UPDATE":
            return [Part("INSERT", Verb.UPDATE, "sql:table", name, ("upsert",))]
        return [Part("INSERT", Verb.CREATE, "sql:table", name)]

    def _merge_stmt(self, body: Node) -> list[Part]:
        relation = body.get("relation")
        names = _target_names(relation)
        name = _relation(relation)
        parts: list[Part] = []
        join_all = _tautology(body.get("joinCondition"), names)
        for clause in body.get("mergeWhenClauses", []):
            when = clause.get("MergeWhenClause", {})
            command = when.get("commandType")
            verb = {"CMD_DELETE": Verb.DELETE, "CMD_UPDATE": Verb.UPDATE}.get(command)
            if verb is None:
                parts.append(Part("MERGE", Verb.CREATE, "sql:table", name))
                continue
            condition = when.get("condition")
            every = join_all and (condition is None or _tautology(condition, names))
            kind = "DELETE" if verb is Verb.DELETE else "UPDATE"
            tags = unfiltered_tags(kind, TAUTOLOGY) if every else ()
            if when.get("matchKind") == "MERGE_WHEN_NOT_MATCHED_BY_SOURCE":
                tags = (*tags, "not-matched-by-source")
            parts.append(Part("MERGE", verb, "sql:table", name, tags))
        return parts or [Part("MERGE", Verb.UPDATE, "sql:table", name)]

    def _truncate_stmt(self, body: Node) -> list[Part]:
        relations = body.get("relations", [])
        tags: tuple[str, ...] = ("truncate",)
        if len(relations) > 1 or body.get("behavior") == "DROP_CASCADE":
            tags = (*tags, "bulk")
        if body.get("behavior") == "DROP_CASCADE":
            tags = (*tags, "cascade")
        return [Part("TRUNCATE", Verb.DELETE, "sql:table", _relation(r), tags) for r in relations]

    def _drop_stmt(self, body: Node) -> list[Part]:
        remove = str(body.get("removeType", "OBJECT_UNKNOWN"))
        words = _OBJECT_WORDS.get(remove, remove.removeprefix("OBJECT_").replace("_", " "))
        rtype = "sql:" + words.lower().replace(" ", "-")
        cascade = body.get("behavior") == "DROP_CASCADE"
        if remove in _DROP_PERMISSION:
            verb = Verb.PERMISSION
        elif remove in _DROP_DESTROYS or cascade:
            # CASCADE drops whatever depends on the object: columns of a dropped type,
            # tables of a dropped extension or server. Taken as a destroy.
            verb = Verb.DESTROY
        else:
            verb = Verb.DELETE
        objects = body.get("objects", [])
        tags = tuple(t for t, on in (("bulk", len(objects) > 1), ("cascade", cascade)) if on)
        return [Part(f"DROP {words}", verb, rtype, _object_name(o), tags) for o in objects]

    def _dropdb_stmt(self, body: Node) -> list[Part]:
        force = any(
            isinstance(o, dict) and o.get("DefElem", {}).get("defname") == "force"
            for o in body.get("options", [])
        )
        tags = ("force",) if force else ()
        return [Part("DROP DATABASE", Verb.DESTROY, "sql:database", body.get("dbname", ""), tags)]

    def _drop_role_stmt(self, body: Node) -> list[Part]:
        roles = [_object_name(r) for r in body.get("roles", [])] or [""]
        return [Part("DROP ROLE", Verb.PERMISSION, "sql:role", r) for r in roles]

    def _drop_owned_stmt(self, body: Node) -> list[Part]:
        roles = [_object_name(r) for r in body.get("roles", [])] or [""]
        tags = ("bulk", "cascade") if body.get("behavior") == "DROP_CASCADE" else ("bulk",)
        return [Part("DROP OWNED", Verb.DESTROY, "sql:role", r, tags) for r in roles]

    def _create_stmt(self, body: Node) -> list[Part]:
        return [Part("CREATE TABLE", Verb.CREATE, "sql:table", _relation(body.get("relation")))]

    def _create_table_as_stmt(self, body: Node) -> list[Part]:
        into = body.get("into", {})
        matview = body.get("objtype") == "OBJECT_MATVIEW"
        operation = "CREATE MATERIALIZED VIEW" if matview else "CREATE TABLE"
        if body.get("is_select_into"):
            operation = "SELECT INTO"
        rtype = "sql:materialized-view" if matview else "sql:table"
        return [Part(operation, Verb.CREATE, rtype, _relation(into.get("rel")))]

    def _view_stmt(self, body: Node) -> list[Part]:
        name = _relation(body.get("view"))
        if body.get("replace"):
            return [Part("CREATE VIEW", Verb.UPDATE, "sql:view", name, ("replace",))]
        return [Part("CREATE VIEW", Verb.CREATE, "sql:view", name)]

    def _create_function_stmt(self, body: Node) -> list[Part]:
        kind = "PROCEDURE" if body.get("is_procedure") else "FUNCTION"
        name = _dotted(body.get("funcname", []))
        if body.get("replace"):
            return [Part(f"CREATE {kind}", Verb.UPDATE, "sql:function", name, ("replace",))]
        return [Part(f"CREATE {kind}", Verb.CREATE, "sql:function", name)]

    def _create_trig_stmt(self, body: Node) -> list[Part]:
        name = str(body.get("trigname", ""))
        if body.get("replace"):
            return [Part("CREATE TRIGGER", Verb.UPDATE, "sql:trigger", name, ("replace",))]
        return [Part("CREATE TRIGGER", Verb.CREATE, "sql:trigger", name)]

    def _rule_stmt(self, body: Node) -> list[Part]:
        """A rule rewrites later statements into its actions: the actions are read as
        parts now (``ON INSERT DO INSTEAD DELETE FROM orders`` is a delete)."""
        verb = Verb.UPDATE if body.get("replace") else Verb.CREATE
        name = str(body.get("rulename", ""))
        parts = [Part("CREATE RULE", verb, "sql:rule", name, ("rule",))]
        for action in body.get("actions", []):
            parts.extend(p.tagged("rule") for p in self.statement(action))
        return parts

    def _create_schema_stmt(self, body: Node) -> list[Part]:
        parts = [Part("CREATE SCHEMA", Verb.CREATE, "sql:schema", body.get("schemaname", ""))]
        for element in body.get("schemaElts", []):
            parts.extend(self.statement(element))
        return parts

    def _createdb_stmt(self, body: Node) -> list[Part]:
        return [Part("CREATE DATABASE", Verb.CREATE, "sql:database", body.get("dbname", ""))]

    def _create_role_stmt(self, body: Node) -> list[Part]:
        return [Part("CREATE ROLE", Verb.PERMISSION, "sql:role", body.get("role", ""))]

    def _create_extension_stmt(self, body: Node) -> list[Part]:
        name = body.get("extname", "")
        return [Part("CREATE EXTENSION", Verb.CREATE, "sql:extension", name, ("extension",))]

    def _index_stmt(self, body: Node) -> list[Part]:
        name = body.get("idxname") or _relation(body.get("relation"))
        return [Part("CREATE INDEX", Verb.CREATE, "sql:index", name)]

    def _alter_table_stmt(self, body: Node) -> list[Part]:
        objtype = str(body.get("objtype", "OBJECT_TABLE"))
        words = _OBJECT_WORDS.get(objtype, objtype.removeprefix("OBJECT_").replace("_", " "))
        operation = f"ALTER {words}"
        rtype = "sql:" + words.lower().replace(" ", "-")
        name = _relation(body.get("relation"))
        parts: list[Part] = []
        for command in body.get("cmds", []):
            cmd = command.get("AlterTableCmd", {})
            subtype = cmd.get("subtype", "")
            cascade = ("cascade",) if cmd.get("behavior") == "DROP_CASCADE" else ()
            if subtype == "AT_DropColumn":
                # The column's data goes with it, in every row: a destroy.
                parts.append(Part(operation, Verb.DESTROY, rtype, name, ("drop-column", *cascade)))
            elif subtype == "AT_DropConstraint":
                parts.append(Part(operation, Verb.UPDATE, rtype, name, ("drop-constraint",)))
            elif subtype in ("AT_DisableRowSecurity", "AT_NoForceRowSecurity"):
                parts.append(Part(operation, Verb.PERMISSION, rtype, name, ("protection-removal",)))
            elif subtype in ("AT_EnableRowSecurity", "AT_ForceRowSecurity", "AT_ChangeOwner"):
                parts.append(Part(operation, Verb.PERMISSION, rtype, name))
            elif subtype.startswith("AT_Disable"):
                parts.append(Part(operation, Verb.UPDATE, rtype, name, ("triggers-disabled",)))
            elif subtype == "AT_DetachPartition":
                parts.append(Part(operation, Verb.UPDATE, rtype, name, ("detach-partition",)))
            elif subtype == "AT_AlterColumnType":
                parts.append(Part(operation, Verb.UPDATE, rtype, name, ("alter-column-type",)))
            else:
                parts.append(Part(operation, Verb.UPDATE, rtype, name))
        return parts or [Part(operation, Verb.UPDATE, rtype, name)]

    def _alter_function_stmt(self, body: Node) -> list[Part]:
        name = _object_name({"ObjectWithArgs": body.get("func", {})})
        definer = any(
            isinstance(a, dict) and a.get("DefElem", {}).get("defname") == "security"
            for a in body.get("actions", [])
        )
        verb = Verb.PERMISSION if definer else Verb.UPDATE
        return [Part("ALTER FUNCTION", verb, "sql:function", name)]

    def _alter_system_stmt(self, body: Node) -> list[Part]:
        setting = body.get("setstmt", {})
        name = str(setting.get("name", ""))
        if name.endswith("_command") or "preload_libraries" in name or name.endswith("_path"):
            # archive_command, restore_command, *_preload_libraries: the server will run it.
            tags: tuple[str, ...] = ("server-program", "server-config")
            return [Part("ALTER SYSTEM", Verb.DESTROY, "sql:setting", name, tags)]
        return [Part("ALTER SYSTEM", Verb.UPDATE, "sql:setting", name, ("server-config",))]

    def _rename_stmt(self, body: Node) -> list[Part]:
        name = _relation(body.get("relation")) or _object_name(body.get("object"))
        return [Part("RENAME", Verb.UPDATE, "", name, ("rename",))]

    def _grant_stmt(self, body: Node) -> list[Part]:
        operation = "GRANT" if body.get("is_grant") else "REVOKE"
        objtype = str(body.get("objtype", "OBJECT_TABLE"))
        words = _OBJECT_WORDS.get(objtype, objtype.removeprefix("OBJECT_").replace("_", " "))
        rtype = "sql:" + words.lower().replace(" ", "-")
        if body.get("targtype") == "ACL_TARGET_ALL_IN_SCHEMA":
            objects = body.get("objects", [])
            names = [_object_name(o) for o in objects] or [""]
            return [Part(operation, Verb.PERMISSION, "sql:schema", n, ("bulk",)) for n in names]
        names = [_object_name(o) for o in body.get("objects", [])] or [""]
        return [Part(operation, Verb.PERMISSION, rtype if any(names) else "", n) for n in names]

    def _grant_role_stmt(self, body: Node) -> list[Part]:
        operation = "GRANT ROLE" if body.get("is_grant") else "REVOKE ROLE"
        roles = [_object_name(r) for r in body.get("granted_roles", [])] or [""]
        return [Part(operation, Verb.PERMISSION, "sql:role", r) for r in roles]

    def _variable_set_stmt(self, body: Node) -> list[Part]:
        return [self._setting(str(body.get("name", "")), "SET")]

    def _setting(self, name: str, operation: str) -> Part:
        """SET and set_config: who the session is and how it resolves names matter."""
        name = name.lower()
        if name in ("role", "session_authorization"):
            return Part(operation, Verb.PERMISSION, "sql:setting", name)
        if name == "search_path":
            self.search_path_changed = True
            return Part(operation, Verb.READ, "sql:setting", name, ("search-path",))
        if name == "session_replication_role":
            # "replica" skips triggers, foreign-key actions included.
            return Part(operation, Verb.UPDATE, "sql:setting", name, ("triggers-disabled",))
        return Part(operation, Verb.READ, "sql:setting", name)

    def _transaction_stmt(self, body: Node) -> list[Part]:
        kind = str(body.get("kind", ""))
        if kind == "TRANS_STMT_COMMIT_PREPARED":
            # Commits work prepared by another request: what it does is not in this one.
            gid = str(body.get("gid", ""))
            tags = ("prepared-transaction", DYNAMIC)
            return [Part("COMMIT PREPARED", Verb.DESTROY, "sql:transaction", gid, tags)]
        if kind == "TRANS_STMT_ROLLBACK_PREPARED":
            gid = str(body.get("gid", ""))
            return [
                Part(
                    "ROLLBACK PREPARED",
                    Verb.UPDATE,
                    "sql:transaction",
                    gid,
                    ("prepared-transaction",),
                )
            ]
        words = kind.removeprefix("TRANS_STMT_").replace("_", " ")
        return [Part(words, Verb.READ)]

    def _explain_stmt(self, body: Node) -> list[Part]:
        """EXPLAIN plans without running, except with ANALYZE; planning still folds
        IMMUTABLE functions, so the functions of the statement are judged either way."""
        query = body.get("query", {})
        analyze = False
        for option in body.get("options", []):
            element = option.get("DefElem", {}) if isinstance(option, dict) else {}
            if element.get("defname") == "analyze":
                analyze = _option_runs(element)
        if analyze:
            return [Part("EXPLAIN", Verb.READ), *self.statement(query)]
        parts = [Part("EXPLAIN", Verb.READ)]
        for nested_type, nested in _nested(query):
            if nested_type == "FuncCall":
                parts.extend(self._function(nested))
        return parts

    def _copy_stmt(self, body: Node) -> list[Part]:
        name = _relation(body.get("relation"))
        rtype = "sql:table" if name else ""
        if body.get("is_program"):
            tags: tuple[str, ...] = ("server-program",)
            # The command line is not kept: it may carry credentials.
            return [Part("COPY", Verb.DESTROY, "sql:program", name, tags)]
        if body.get("is_from"):
            tags = ("server-file",) if body.get("filename") else ()
            return [Part("COPY", Verb.CREATE, rtype, name, tags)]
        if body.get("filename"):
            # COPY ... TO '/path' writes any file the server's user can write.
            return [Part("COPY", Verb.DESTROY, "sql:file", str(body["filename"]), ("server-file",))]
        return [Part("COPY", Verb.READ, rtype, name)]

    def _do_stmt(self, body: Node) -> list[Part]:
        language = "plpgsql"
        for arg in body.get("args", []):
            element = arg.get("DefElem", {}) if isinstance(arg, dict) else {}
            if element.get("defname") == "language":
                language = _sval(element.get("arg")) or language
        return [Part("DO", Verb.DESTROY, "sql:code", language, (DYNAMIC,))]

    def _prepare_stmt(self, body: Node) -> list[Part]:
        """The prepared statement is read as if run now (an EXECUTE may follow, here or
        in a later request on the same session)."""
        name = str(body.get("name", ""))
        inner = self.statement(body.get("query", {}))
        self.prepared[name] = inner
        return [Part("PREPARE", Verb.READ, "sql:prepared-statement", name), *inner]

    def _execute_stmt(self, body: Node) -> list[Part]:
        name = str(body.get("name", ""))
        if name in self.prepared:
            return [
                Part("EXECUTE", Verb.READ, "sql:prepared-statement", name),
                *self.prepared[name],
            ]
        tags = (DYNAMIC,)
        return [Part("EXECUTE", Verb.DESTROY, "sql:prepared-statement", name, tags)]

    def _call_stmt(self, body: Node) -> list[Part]:
        call = body.get("funccall", {})
        parts = self._function(call)
        if parts:
            return parts
        return [Part("CALL", Verb.READ, "sql:function", _dotted(call.get("funcname", [])))]

    def _declare_cursor_stmt(self, body: Node) -> list[Part]:
        name = str(body.get("portalname", ""))
        return [Part("DECLARE CURSOR", Verb.READ, "sql:cursor", name)]

    def _load_stmt(self, body: Node) -> list[Part]:
        library = str(body.get("filename", ""))
        return [Part("LOAD", Verb.DESTROY, "sql:library", library, ("server-program",))]

    # -------------------------------------------------------------- function calls

    def _function(self, call: Node) -> list[Part]:
        """The part a function call is, or none for a function free of side effects."""
        names = [_sval(n) for n in call.get("funcname", [])]
        name = names[-1] if names else ""
        schema = ".".join(names[:-1])
        qualified = ".".join(names)
        builtin = schema in ("", "pg_catalog")
        if name in _SQL_ARGUMENT:
            return self._sql_argument(name, qualified, call.get("args", []))
        if builtin and name == "set_config":
            setting = _constant((call.get("args") or [None])[0])
            if isinstance(setting, str):
                return [self._setting(setting, "SET")]
            self.search_path_changed = True
            return [Part("CALL", Verb.UPDATE, "sql:function", qualified, ("search-path",))]
        if builtin and name in _EFFECTS:
            verb, tags = _EFFECTS[name]
            if "sequence" not in tags:  # nextval/setval: an ordinary write, not a call to hold
                tags = (*tags, "function-call")
            return [Part("CALL", verb, "sql:function", qualified, tags)]
        trusted = schema == "pg_catalog" or (schema == "" and not self.search_path_changed)
        if trusted and name in side_effect_free():
            return []
        return [Part("CALL", Verb.EXECUTE, "sql:function", qualified, ("function-call",))]

    def _sql_argument(self, name: str, qualified: str, args: list[Any]) -> list[Part]:
        """A function that runs SQL text: a constant text is read like the request's own
        (tagged with the function), anything else is dynamic SQL."""
        if name in _DBLINK:
            # dblink([conn,] sql [, fail_on_error]), dblink_exec likewise,
            # dblink_send_query(conn, sql), dblink_open([conn,] cursor, sql [, fail]):
            # the SQL is the last argument once a trailing boolean is set aside.
            trimmed = list(args)
            if len(trimmed) > 1 and _is_bool(trimmed[-1]):
                trimmed.pop()
            sql = _constant(trimmed[-1]) if trimmed else None
        elif name == "ts_rewrite" and len(args) != 2:
            return []  # ts_rewrite(query, target, substitute) rewrites a tsquery, no SQL
        else:
            index = _SQL_ARGUMENT[name]
            sql = _constant(args[index]) if len(args) > index else None
        tag = "dblink" if name in _DBLINK else name
        call = Part("CALL", Verb.READ, "sql:function", qualified, (tag,))
        if not isinstance(sql, str):
            return [Part("CALL", Verb.DESTROY, "sql:function", qualified, (tag, DYNAMIC))]
        try:
            inner = self.read(sql)
        except SqlError:
            return [Part("CALL", Verb.UNKNOWN, "sql:function", qualified, (tag, "parse-error"))]
        return [call, *(p.tagged(tag) for p in inner)]


def _is_bool(node: Any) -> bool:
    return isinstance(_constant(node), bool)


def _unreadable(tag: str) -> Part:
    return Part("UNPARSED", Verb.UNKNOWN, tags=(tag,))

"""PostgreSQL statements, read with PostgreSQL's own parser (pglast: libpg_query).

``PostgresReader.read(text)`` parses ``text`` exactly as the server's parser does
(comments, nested comments, dollar quoting, ``E''`` strings, ``U&`` identifiers are the
parser's business, not ours) and classifies every statement from its parse tree:

* every top-level statement is a :class:`Part`; operations a statement performs inside
  itself are parts too: a data-modifying CTE (``WITH gone AS (DELETE ...) SELECT``), the
  query of ``COPY (...) TO``, ``EXPLAIN ANALYZE``'s statement, a function called anywhere
  in the tree that PostgreSQL does not declare free of side effects;
* a ``DELETE``/``UPDATE``/``MERGE`` is unfiltered when its WHERE (or ``ON``) is absent, does
  not depend on the target's row, or is true for every row (:func:`tautology`);
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
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pglast import parser as _pg

from guardproxy.action import Verb
from guardproxy.recognise.providers.sql.postgres_names import (
    DBLINK,
    DEFINITIONS,
    DML,
    DROP_DESTROYS,
    DROP_PERMISSION,
    EFFECTS,
    OBJECT_WORDS,
    PERMISSION_STATEMENTS,
    READ_STATEMENTS,
    SQL_ARGUMENT,
    UPDATE_STATEMENTS,
    side_effect_free,
)
from guardproxy.recognise.providers.sql.postgres_tree import (
    Node,
    constant,
    dotted,
    filter_tags,
    nested_operations,
    object_name,
    option_runs,
    relation_name,
    strip_locations,
    sval,
    target_names,
    tautology,
)
from guardproxy.recognise.providers.sql.statement import (
    DYNAMIC,
    TAUTOLOGY,
    Part,
    SqlError,
    unfiltered_tags,
)

__all__ = ["PostgresReader", "parse_tree", "side_effect_free"]


_MAX_ESCAPE_REWRITES = 64
_ESCAPE_TAG = "ambiguous:standard-conforming-strings"


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
    top_level = sum(next(iter(s)) in DML for s in statements)
    nested = '"FuncCall"' in raw or sum(raw.count(f'"{k}"') for k in DML) > top_level
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
            primary is not None and strip_locations(alternative) == strip_locations(primary)
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
        if node_type in DEFINITIONS or not walk:
            return own
        parts = list(own)
        for nested_type, nested in nested_operations(body):
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
        if node_type in PERMISSION_STATEMENTS:
            return [Part(_words(node_type), Verb.PERMISSION)]
        if node_type in READ_STATEMENTS:
            return [Part(_words(node_type), Verb.READ)]
        if node_type in UPDATE_STATEMENTS:
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
            return [Part("SELECT INTO", Verb.CREATE, "sql:table", relation_name(into.get("rel")))]
        source = next(iter(body.get("fromClause") or []), None)
        name = relation_name(source) if isinstance(source, dict) and "RangeVar" in source else ""
        return [Part("SELECT", Verb.READ, "sql:table" if name else "", name)]

    def _delete_stmt(self, body: Node) -> list[Part]:
        relation = body.get("relation")
        tags = filter_tags("DELETE", body.get("whereClause"), target_names(relation))
        return [Part("DELETE", Verb.DELETE, "sql:table", relation_name(relation), tags)]

    def _update_stmt(self, body: Node) -> list[Part]:
        relation = body.get("relation")
        tags = filter_tags("UPDATE", body.get("whereClause"), target_names(relation))
        return [Part("UPDATE", Verb.UPDATE, "sql:table", relation_name(relation), tags)]

    def _insert_stmt(self, body: Node) -> list[Part]:
        name = relation_name(body.get("relation"))
        conflict = body.get("onConflictClause")
        if isinstance(conflict, dict) and conflict.get("action") == "ONCONFLICT_UPDATE":
            return [Part("INSERT", Verb.UPDATE, "sql:table", name, ("upsert",))]
        return [Part("INSERT", Verb.CREATE, "sql:table", name)]

    def _merge_stmt(self, body: Node) -> list[Part]:
        relation = body.get("relation")
        names = target_names(relation)
        name = relation_name(relation)
        parts: list[Part] = []
        join_all = tautology(body.get("joinCondition"), names)
        for clause in body.get("mergeWhenClauses", []):
            when = clause.get("MergeWhenClause", {})
            command = when.get("commandType")
            verb = {"CMD_DELETE": Verb.DELETE, "CMD_UPDATE": Verb.UPDATE}.get(command)
            if verb is None:
                parts.append(Part("MERGE", Verb.CREATE, "sql:table", name))
                continue
            condition = when.get("condition")
            every = join_all and (condition is None or tautology(condition, names))
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
        return [
            Part("TRUNCATE", Verb.DELETE, "sql:table", relation_name(r), tags) for r in relations
        ]

    def _drop_stmt(self, body: Node) -> list[Part]:
        remove = str(body.get("removeType", "OBJECT_UNKNOWN"))
        words = OBJECT_WORDS.get(remove, remove.removeprefix("OBJECT_").replace("_", " "))
        rtype = "sql:" + words.lower().replace(" ", "-")
        cascade = body.get("behavior") == "DROP_CASCADE"
        if remove in DROP_PERMISSION:
            verb = Verb.PERMISSION
        elif remove in DROP_DESTROYS or cascade:
            # CASCADE drops whatever depends on the object: columns of a dropped type,
            # tables of a dropped extension or server. Taken as a destroy.
            verb = Verb.DESTROY
        else:
            verb = Verb.DELETE
        objects = body.get("objects", [])
        tags = tuple(t for t, on in (("bulk", len(objects) > 1), ("cascade", cascade)) if on)
        return [Part(f"DROP {words}", verb, rtype, object_name(o), tags) for o in objects]

    def _dropdb_stmt(self, body: Node) -> list[Part]:
        force = any(
            isinstance(o, dict) and o.get("DefElem", {}).get("defname") == "force"
            for o in body.get("options", [])
        )
        tags = ("force",) if force else ()
        return [Part("DROP DATABASE", Verb.DESTROY, "sql:database", body.get("dbname", ""), tags)]

    def _drop_role_stmt(self, body: Node) -> list[Part]:
        roles = [object_name(r) for r in body.get("roles", [])] or [""]
        return [Part("DROP ROLE", Verb.PERMISSION, "sql:role", r) for r in roles]

    def _drop_owned_stmt(self, body: Node) -> list[Part]:
        roles = [object_name(r) for r in body.get("roles", [])] or [""]
        tags = ("bulk", "cascade") if body.get("behavior") == "DROP_CASCADE" else ("bulk",)
        return [Part("DROP OWNED", Verb.DESTROY, "sql:role", r, tags) for r in roles]

    def _create_stmt(self, body: Node) -> list[Part]:
        return [Part("CREATE TABLE", Verb.CREATE, "sql:table", relation_name(body.get("relation")))]

    def _create_table_as_stmt(self, body: Node) -> list[Part]:
        into = body.get("into", {})
        matview = body.get("objtype") == "OBJECT_MATVIEW"
        operation = "CREATE MATERIALIZED VIEW" if matview else "CREATE TABLE"
        if body.get("is_select_into"):
            operation = "SELECT INTO"
        rtype = "sql:materialized-view" if matview else "sql:table"
        return [Part(operation, Verb.CREATE, rtype, relation_name(into.get("rel")))]

    def _view_stmt(self, body: Node) -> list[Part]:
        name = relation_name(body.get("view"))
        if body.get("replace"):
            return [Part("CREATE VIEW", Verb.UPDATE, "sql:view", name, ("replace",))]
        return [Part("CREATE VIEW", Verb.CREATE, "sql:view", name)]

    def _create_function_stmt(self, body: Node) -> list[Part]:
        kind = "PROCEDURE" if body.get("is_procedure") else "FUNCTION"
        name = dotted(body.get("funcname", []))
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
        name = body.get("idxname") or relation_name(body.get("relation"))
        return [Part("CREATE INDEX", Verb.CREATE, "sql:index", name)]

    def _alter_table_stmt(self, body: Node) -> list[Part]:
        objtype = str(body.get("objtype", "OBJECT_TABLE"))
        words = OBJECT_WORDS.get(objtype, objtype.removeprefix("OBJECT_").replace("_", " "))
        operation = f"ALTER {words}"
        rtype = "sql:" + words.lower().replace(" ", "-")
        name = relation_name(body.get("relation"))
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
        name = object_name({"ObjectWithArgs": body.get("func", {})})
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
        name = relation_name(body.get("relation")) or object_name(body.get("object"))
        return [Part("RENAME", Verb.UPDATE, "", name, ("rename",))]

    def _grant_stmt(self, body: Node) -> list[Part]:
        operation = "GRANT" if body.get("is_grant") else "REVOKE"
        objtype = str(body.get("objtype", "OBJECT_TABLE"))
        words = OBJECT_WORDS.get(objtype, objtype.removeprefix("OBJECT_").replace("_", " "))
        rtype = "sql:" + words.lower().replace(" ", "-")
        if body.get("targtype") == "ACL_TARGET_ALL_IN_SCHEMA":
            objects = body.get("objects", [])
            names = [object_name(o) for o in objects] or [""]
            return [Part(operation, Verb.PERMISSION, "sql:schema", n, ("bulk",)) for n in names]
        names = [object_name(o) for o in body.get("objects", [])] or [""]
        return [Part(operation, Verb.PERMISSION, rtype if any(names) else "", n) for n in names]

    def _grant_role_stmt(self, body: Node) -> list[Part]:
        operation = "GRANT ROLE" if body.get("is_grant") else "REVOKE ROLE"
        roles = [object_name(r) for r in body.get("granted_roles", [])] or [""]
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
                analyze = option_runs(element)
        if analyze:
            return [Part("EXPLAIN", Verb.READ), *self.statement(query)]
        parts = [Part("EXPLAIN", Verb.READ)]
        for nested_type, nested in nested_operations(query):
            if nested_type == "FuncCall":
                parts.extend(self._function(nested))
        return parts

    def _copy_stmt(self, body: Node) -> list[Part]:
        name = relation_name(body.get("relation"))
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
                language = sval(element.get("arg")) or language
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
        return [Part("CALL", Verb.READ, "sql:function", dotted(call.get("funcname", [])))]

    def _declare_cursor_stmt(self, body: Node) -> list[Part]:
        name = str(body.get("portalname", ""))
        return [Part("DECLARE CURSOR", Verb.READ, "sql:cursor", name)]

    def _load_stmt(self, body: Node) -> list[Part]:
        library = str(body.get("filename", ""))
        return [Part("LOAD", Verb.DESTROY, "sql:library", library, ("server-program",))]

    # -------------------------------------------------------------- function calls

    def _function(self, call: Node) -> list[Part]:
        """The part a function call is, or none for a function free of side effects."""
        names = [sval(n) for n in call.get("funcname", [])]
        name = names[-1] if names else ""
        schema = ".".join(names[:-1])
        qualified = ".".join(names)
        builtin = schema in ("", "pg_catalog")
        if name in SQL_ARGUMENT:
            return self._sql_argument(name, qualified, call.get("args", []))
        if builtin and name == "set_config":
            setting = constant((call.get("args") or [None])[0])
            if isinstance(setting, str):
                return [self._setting(setting, "SET")]
            self.search_path_changed = True
            return [Part("CALL", Verb.UPDATE, "sql:function", qualified, ("search-path",))]
        if builtin and name in EFFECTS:
            verb, tags = EFFECTS[name]
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
        if name in DBLINK:
            # dblink([conn,] sql [, fail_on_error]), dblink_exec likewise,
            # dblink_send_query(conn, sql), dblink_open([conn,] cursor, sql [, fail]):
            # the SQL is the last argument once a trailing boolean is set aside.
            trimmed = list(args)
            if len(trimmed) > 1 and _is_bool(trimmed[-1]):
                trimmed.pop()
            sql = constant(trimmed[-1]) if trimmed else None
        elif name == "ts_rewrite" and len(args) != 2:
            return []  # ts_rewrite(query, target, substitute) rewrites a tsquery, no SQL
        else:
            index = SQL_ARGUMENT[name]
            sql = constant(args[index]) if len(args) > index else None
        tag = "dblink" if name in DBLINK else name
        call = Part("CALL", Verb.READ, "sql:function", qualified, (tag,))
        if not isinstance(sql, str):
            return [Part("CALL", Verb.DESTROY, "sql:function", qualified, (tag, DYNAMIC))]
        try:
            inner = self.read(sql)
        except SqlError:
            return [Part("CALL", Verb.UNKNOWN, "sql:function", qualified, (tag, "parse-error"))]
        return [call, *(p.tagged(tag) for p in inner)]


def _is_bool(node: Any) -> bool:
    return isinstance(constant(node), bool)


def _unreadable(tag: str) -> Part:
    return Part("UNPARSED", Verb.UNKNOWN, tags=(tag,))

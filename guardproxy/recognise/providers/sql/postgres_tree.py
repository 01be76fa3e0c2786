"""Reading pglast's parse trees: names, constants and options of nodes, and whether a
WHERE (or ``ON``) clause filters the target's rows, for the PostgreSQL reader
(``postgres.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from guardproxy.recognise.providers.sql.postgres_names import NESTED
from guardproxy.recognise.providers.sql.statement import TAUTOLOGY, unfiltered_tags

__all__ = [
    "Node",
    "complementary",
    "constant",
    "dotted",
    "filter_tags",
    "nested_operations",
    "object_name",
    "option_runs",
    "references",
    "relation_name",
    "strip_locations",
    "sval",
    "target_names",
    "tautology",
]

Node = dict[str, Any]
BRANCHES = (dict, list)  # a tuple: `dict | list` would build a union object per test


def strip_locations(node: Any) -> Any:
    """A parse tree without source positions: two spellings of one expression compare
    equal (``id = id``; the second statement list of an ambiguous text)."""
    if isinstance(node, dict):
        return {k: strip_locations(v) for k, v in node.items() if "location" not in k}
    if isinstance(node, list):
        return [strip_locations(v) for v in node]
    return node


def nested_operations(node: Any) -> Iterator[tuple[str, Node]]:
    """Every DML statement and function call anywhere below ``node``, in tree order."""
    stack: list[Any] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            children = []
            for key, value in current.items():
                if key in NESTED:
                    yield key, value
                if isinstance(value, BRANCHES):
                    children.append(value)
            stack.extend(reversed(children))
        elif isinstance(current, list):
            stack.extend(reversed(current))


def sval(node: Any) -> str:
    """The text of a ``String`` node (or ``""``)."""
    if isinstance(node, dict) and "String" in node:
        return str(node["String"].get("sval", ""))
    return ""


def dotted(items: list[Any]) -> str:
    return ".".join(s for s in (sval(i) for i in items) if s)


def relation_name(range_var: Any) -> str:
    """``schema.table`` of a RangeVar as the parser resolved it (unquoted names folded)."""
    if not isinstance(range_var, dict):
        return ""
    if "RangeVar" in range_var:
        range_var = range_var["RangeVar"]
    parts = [range_var.get(k, "") for k in ("catalogname", "schemaname", "relname")]
    return ".".join(p for p in parts if p)


def object_name(node: Any) -> str:
    """The name of a DROP/GRANT/COMMENT object node, whatever its shape."""
    if not isinstance(node, dict):
        return ""
    if "List" in node:
        return dotted(node["List"].get("items", []))
    if "String" in node:
        return sval(node)
    if "ObjectWithArgs" in node:
        return dotted(node["ObjectWithArgs"].get("objname", []))
    if "TypeName" in node:
        return dotted(node["TypeName"].get("names", []))
    if "RangeVar" in node:
        return relation_name(node)
    if "RoleSpec" in node:
        return str(node["RoleSpec"].get("rolename", ""))
    if "AccessPriv" in node:
        return str(node["AccessPriv"].get("priv_name", ""))
    return ""


def constant(node: Any) -> Any:
    """The value of a constant (``A_Const``, possibly cast), or ``None``."""
    if not isinstance(node, dict):
        return None
    if "TypeCast" in node:
        return constant(node["TypeCast"].get("arg"))
    const = node.get("A_Const")
    if not isinstance(const, dict) or const.get("isnull"):
        return None
    # libpg_query's JSON leaves out zero values: {"ival": {}} is 0, {"boolval": {}} false.
    for kind, zero in (("sval", ""), ("ival", 0), ("fval", "0"), ("boolval", False), ("bsval", "")):
        if kind in const:
            return const[kind].get(kind, zero)
    return None


def option_runs(element: Node) -> bool:
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
    return sval(arg).lower() not in ("false", "off", "0")


# ------------------------------------------------------------------ WHERE clauses


def references(node: Any, names: frozenset[str], inside_subquery: bool = False) -> bool:
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
                qualifier = ".".join(sval(f) for f in fields[:-1])
                if qualifier in names or sval(fields[-2]) in names:
                    return True
            continue
        for key, value in current.items():
            if isinstance(value, BRANCHES):
                stack.append((value, sub or key == "subselect"))
    return False


def tautology(node: Any, names: frozenset[str]) -> bool:
    """Whether a WHERE/ON condition selects every row of the target: it does not read the
    target's row at all (``1 = 1``, ``'yes'``, ``$1``, ``random() < 0.5``, ``EXISTS
    (SELECT 1 FROM other)``: all rows or none), compares an expression with itself
    (``id = id``), tests a value and its opposite (``x IS NULL OR x IS NOT NULL``), or is
    an OR with such a branch or an AND of only such terms."""
    if not references(node, names):
        return True
    if not isinstance(node, dict):
        return False
    boolean = node.get("BoolExpr")
    if isinstance(boolean, dict):
        args = boolean.get("args", [])
        if boolean.get("boolop") == "OR_EXPR":
            return any(tautology(a, names) for a in args) or complementary(args)
        if boolean.get("boolop") == "AND_EXPR":
            return all(tautology(a, names) for a in args)
        return False
    expr = node.get("A_Expr")
    if isinstance(expr, dict):
        kind = expr.get("kind")
        operator = sval((expr.get("name") or [None])[-1])
        same = strip_locations(expr.get("lexpr")) == strip_locations(expr.get("rexpr"))
        if kind == "AEXPR_OP" and operator in ("=", ">=", "<=") and same:
            return True
        if kind == "AEXPR_NOT_DISTINCT" and same:
            return True
        if kind in ("AEXPR_LIKE", "AEXPR_ILIKE") and operator in ("~~", "~~*"):
            pattern = constant(expr.get("rexpr"))
            return isinstance(pattern, str) and pattern != "" and set(pattern) == {"%"}
    return False


def complementary(args: list[Any]) -> bool:
    """An OR holding ``x IS NULL`` and ``x IS NOT NULL``, or ``e`` and ``NOT e``."""
    nulls: dict[str, set[str]] = {}
    plain: set[str] = set()
    negated: set[str] = set()
    for arg in args:
        if not isinstance(arg, dict):
            continue
        if "NullTest" in arg:
            test = arg["NullTest"]
            key = json.dumps(strip_locations(test.get("arg")), sort_keys=True)
            nulls.setdefault(key, set()).add(str(test.get("nulltesttype")))
            continue
        boolean = arg.get("BoolExpr")
        if isinstance(boolean, dict) and boolean.get("boolop") == "NOT_EXPR":
            negated.add(json.dumps(strip_locations(boolean.get("args")), sort_keys=True))
        plain.add(json.dumps(strip_locations([arg]), sort_keys=True))
    return any(len(kinds) == 2 for kinds in nulls.values()) or len(plain & negated) > 0


def filter_tags(kind: str, where: Any, names: frozenset[str]) -> tuple[str, ...]:
    if where is None:
        return unfiltered_tags(kind)
    if tautology(where, names):
        return unfiltered_tags(kind, TAUTOLOGY)
    return ()


def target_names(relation: Any) -> frozenset[str]:
    """The names a WHERE clause can use for the target: its alias if it has one (then
    PostgreSQL refuses the table's own name), else the table and ``schema.table``."""
    if not isinstance(relation, dict):
        return frozenset()
    alias = relation.get("alias")
    if isinstance(alias, dict) and alias.get("aliasname"):
        return frozenset({alias["aliasname"]})
    names = {relation.get("relname", ""), relation_name(relation)}
    return frozenset(n for n in names if n)

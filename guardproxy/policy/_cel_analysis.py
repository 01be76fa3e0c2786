"""Static analysis of CEL expressions at load (see :mod:`guardproxy.policy.cel`): a walk over
cel-python's lark tree against the input schema that reports unknown identifiers, fields
and functions, bad regex literals and impossible enum comparisons as :class:`Issue` s,
and records which fields each expression reads (:class:`Analysis`), for ``explain``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import lark
import re2

from guardproxy.policy._cel_library import (
    BUILTIN_FUNCTIONS,
    BUILTIN_METHODS,
    LIBRARY,
    MACROS,
    TYPE_NAMES,
)
from guardproxy.policy._cel_schema import (
    ROOT_SCHEMA,
    ROOTS,
    Leaf,
    SchemaNode,
)

# ---------------------------------------------------------------------------
# What the analysis finds.


@dataclass(frozen=True)
class Issue:
    """A static problem found in an expression (position relative to the expression)."""

    message: str
    hint: str = ""
    line: int = 1
    column: int = 1


@dataclass
class Analysis:
    """What an expression reads and what is wrong with it."""

    paths: set[tuple[str, ...]] = field(default_factory=set)
    roots: set[str] = field(default_factory=set)
    variables: set[str] = field(default_factory=set)
    issues: list[Issue] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Static analysis over cel-python's lark tree.


def _tree(node: Any) -> lark.Tree[Any] | None:
    return node if isinstance(node, lark.Tree) else None


def _where(node: lark.Tree[Any]) -> tuple[int, int]:
    """Line and column of the first token under ``node``."""
    for token in node.scan_values(lambda value: isinstance(value, lark.Token)):
        return token.line or 1, token.column or 1
    return 1, 1


def _single_chain(node: Any) -> Any:
    """Descend through one-child wrapper nodes (expr -> ... -> member)."""
    while isinstance(node, lark.Tree) and len(node.children) == 1 and node.data != "primary":
        node = node.children[0]
    return node


def _member_path(node: Any) -> list[str] | None:
    """``a.b.c`` as ["a","b","c"] when ``node`` is a plain field path, else None."""
    node = _single_chain(node)
    if not isinstance(node, lark.Tree):
        return None
    if node.data == "primary":
        child = node.children[0] if node.children else None
        if isinstance(child, lark.Tree) and child.data == "ident":
            return [str(child.children[0])]
        return None
    if node.data == "member_dot":
        inner = _member_path(node.children[0])
        return None if inner is None else [*inner, str(node.children[1])]
    return None


def _string_literal(node: Any) -> str | None:
    node = _single_chain(node)
    if isinstance(node, lark.Tree) and node.data == "primary":
        child = node.children[0] if node.children else None
        if isinstance(child, lark.Tree) and child.data == "literal":
            token = str(child.children[0])
            if (
                len(token) >= 2
                and token[0] == token[-1]
                and token[0] in "\"'"
                and "\\" not in token
            ):
                return token[1:-1]
    return None


def _list_literals(node: Any) -> list[str] | None:
    node = _single_chain(node)
    if not (isinstance(node, lark.Tree) and node.data == "primary"):
        return None
    child = node.children[0] if node.children else None
    if not (isinstance(child, lark.Tree) and child.data == "list_lit"):
        return None
    if not child.children:
        return []
    values = [_string_literal(item) for item in child.children[0].children]
    return None if any(v is None for v in values) else [v for v in values if v is not None]


def schema_problem(path: tuple[str, ...]) -> tuple[str, str] | None:
    """(message, hint) when ``path`` (rooted at an input root) is not in the schema."""
    schema: SchemaNode = ROOT_SCHEMA[path[0]]
    for depth, name in enumerate(path[1:], start=1):
        if isinstance(schema, Leaf):
            if schema.kind in ("map", "any"):
                return None
            return f"`{'.'.join(path[:depth])}` is a {schema.kind} and has no field `{name}`", ""
        if name not in schema:
            where = ".".join(path[:depth])
            hint = _suggest(name, schema, f"fields of `{where}`: {', '.join(sorted(schema))}")
            return f"`{where}` has no field `{name}`", hint
        schema = schema[name]
    return None


def check_input_path(path: tuple[str, ...]) -> str | None:
    """What is wrong with a plain field path for a message placeholder, if anything."""
    if path[0] not in ROOT_SCHEMA:
        return f"it must start with one of {', '.join(ROOT_SCHEMA)}"
    problem = schema_problem(path)
    if problem is None:
        return None
    message, hint = problem
    return f"{message} ({hint})" if hint else message


class _Analyser:
    def __init__(self, params: frozenset[str], variables: frozenset[str]) -> None:
        self.params = params
        self.variables = variables
        self.result = Analysis()

    def issue(self, node: lark.Tree[Any], message: str, hint: str = "") -> None:
        line, column = _where(node)
        self.result.issues.append(Issue(message, hint, line, column))

    def visit(self, node: Any, bound: frozenset[str]) -> None:
        tree = _tree(node)
        if tree is None:
            return
        handler = getattr(self, f"_{tree.data}", None)
        if handler is not None:
            handler(tree, bound)
            return
        for child in tree.children:
            self.visit(child, bound)

    # -- names and fields

    def _ident(self, node: lark.Tree[Any], bound: frozenset[str]) -> None:
        self.check_path(node, [str(node.children[0])], bound)

    def _member_dot(self, node: lark.Tree[Any], bound: frozenset[str]) -> None:
        path = _member_path(node)
        if path is None:
            for child in node.children:
                self.visit(child, bound)
            return
        self.check_path(node, path, bound)

    def check_path(self, node: lark.Tree[Any], path: list[str], bound: frozenset[str]) -> None:
        root = path[0]
        if root in bound:
            return
        if root in TYPE_NAMES and len(path) == 1:
            return
        if root not in ROOTS:
            self.issue(
                node,
                f"unknown identifier `{root}`",
                f"expressions can read {', '.join(ROOTS)}",
            )
            return
        self.result.roots.add(root)
        if root == "variables":
            self._check_variable(node, path)
            return
        if root == "params":
            self._check_param(node, path)
            return
        self.result.paths.add(tuple(path))
        self._check_schema(node, path)

    def _check_variable(self, node: lark.Tree[Any], path: list[str]) -> None:
        if len(path) < 2:
            self.issue(node, "`variables` must be followed by a variable name")
            return
        name = path[1]
        if name not in self.variables:
            self.issue(
                node,
                f"unknown variable `{name}`",
                _suggest(
                    name,
                    self.variables,
                    "variables are declared in spec.variables, "
                    "and may only use those declared before them",
                ),
            )
            return
        self.result.variables.add(name)
        self.result.paths.add(tuple(path[:2]))

    def _check_param(self, node: lark.Tree[Any], path: list[str]) -> None:
        if len(path) < 2:
            self.result.paths.add(("params",))
            return
        if path[1] not in self.params:
            self.issue(
                node,
                f"unknown parameter `{path[1]}`",
                _suggest(path[1], self.params, "parameters are declared in spec.params"),
            )
            return
        self.result.paths.add(tuple(path[:2]))

    def _check_schema(self, node: lark.Tree[Any], path: list[str]) -> None:
        problem = schema_problem(tuple(path))
        if problem is not None:
            self.issue(node, *problem)

    def schema_leaf(self, path: list[str] | None) -> Leaf | None:
        if not path or path[0] not in ROOT_SCHEMA:
            return None
        schema: SchemaNode = ROOT_SCHEMA[path[0]]
        for name in path[1:]:
            if isinstance(schema, Leaf) or name not in schema:
                return None
            schema = schema[name]
        return schema if isinstance(schema, Leaf) else None

    # -- calls

    def _ident_arg(self, node: lark.Tree[Any], bound: frozenset[str]) -> None:
        name = str(node.children[0])
        args = node.children[1].children if len(node.children) > 1 and node.children[1] else []
        if name not in BUILTIN_FUNCTIONS and name not in LIBRARY:
            self.issue(node, f"unknown function `{name}`", _functions_hint(name))
        if name == "matches" and len(args) == 2:
            self._check_regex(node, args[1])
        for arg in args:
            self.visit(arg, bound)

    def _member_dot_arg(self, node: lark.Tree[Any], bound: frozenset[str]) -> None:
        target, method = node.children[0], str(node.children[1])
        args = node.children[2].children if len(node.children) > 2 and node.children[2] else []
        self.visit(target, bound)
        if method in MACROS:
            variable = _member_path(args[0]) if args else None
            if not variable or len(variable) != 1:
                self.issue(node, f"`{method}` needs a variable name as its first argument")
                return
            inner = bound | {variable[0]}
            for arg in args[1:]:
                self.visit(arg, inner)
            return
        if method not in BUILTIN_METHODS and method not in LIBRARY:
            self.issue(node, f"unknown method `{method}`", _functions_hint(method))
        if method == "matches" and args:
            self._check_regex(node, args[0])
        for arg in args:
            self.visit(arg, bound)

    def _check_regex(self, node: lark.Tree[Any], argument: Any) -> None:
        pattern = _string_literal(argument)
        if pattern is None:
            return
        try:
            re2.compile(pattern, _QUIET_RE2)
        except re2.error as error:
            self.issue(
                node,
                f"invalid regular expression {pattern!r}: {_re2_message(error)}",
                "CEL uses RE2 syntax: no look-around or back-references",
            )

    # -- comparisons with enumerated fields

    def _relation(self, node: lark.Tree[Any], bound: frozenset[str]) -> None:
        if len(node.children) == 2 and isinstance(node.children[0], lark.Tree):
            operator = node.children[0]
            if operator.data in ("relation_eq", "relation_ne") and operator.children:
                self._check_enum_pair(node, operator.children[0], node.children[1])
            elif operator.data == "relation_in" and operator.children:
                leaf = self.schema_leaf(_member_path(operator.children[0]))
                values = _list_literals(node.children[1])
                if leaf and leaf.choices and values is not None:
                    for value in values:
                        self._check_choice(node, leaf, value)
        for child in node.children:
            self.visit(child, bound)

    def _check_enum_pair(self, node: lark.Tree[Any], left: Any, right: Any) -> None:
        for path_side, literal_side in ((left, right), (right, left)):
            leaf = self.schema_leaf(_member_path(path_side))
            value = _string_literal(literal_side)
            if leaf and leaf.choices and value is not None:
                self._check_choice(node, leaf, value)

    def _check_choice(self, node: lark.Tree[Any], leaf: Leaf, value: str) -> None:
        if value not in leaf.choices:
            self.issue(
                node,
                f'"{value}" can never match: the field is one of {", ".join(leaf.choices)}',
                _suggest(value, leaf.choices, ""),
            )


_QUIET_RE2 = re2.Options()
_QUIET_RE2.log_errors = False


def _re2_message(error: Exception) -> str:
    text = error.args[0] if error.args else error
    return text.decode() if isinstance(text, bytes) else str(text)


def _functions_hint(name: str) -> str:
    known = sorted(BUILTIN_FUNCTIONS | BUILTIN_METHODS | set(LIBRARY) | MACROS)
    return _suggest(name, known, "guardproxy adds glob, globAny, join, lowerAscii and upperAscii")


def _suggest(name: str, known: Iterable[str], fallback: str) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else fallback


def analyse(tree: lark.Tree[Any], params: frozenset[str], variables: frozenset[str]) -> Analysis:
    analyser = _Analyser(params, variables)
    analyser.visit(tree, frozenset())
    return analyser.result

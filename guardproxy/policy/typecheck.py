"""Type inference for policy CEL, at load time.

cel-python has no type checker: a condition that is not a bool (``action.verb``), or
an operator between types that have no overload (``session.deletes > "5"``), is only
found when a request reaches it, and then a deny rule fires on the error and an
allow rule grants nothing. :func:`infer` walks cel-python's parse tree and gives
every node a type from the literals, the input schema (the Action and Context
models), the declared params and variables, the operators, the macros and the
function library; where a type cannot be known it is ``dyn`` and nothing is
reported. Only definite mismatches are problems, so a clean expression may still fail
at run time, but a reported one always would on the path it is on.

The rules follow cel-python 0.5's runtime, not the CEL specification where they
differ: no heterogeneous equality (``1 == 1.0`` and ``1 == "1"`` are errors, while
comparing with ``null`` is not), ``in`` over a string is a substring test.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lark

__all__ = ["BOOL", "DYN", "STRING", "CelType", "TypeIssue", "infer", "list_of", "map_of"]


@dataclass(frozen=True)
class CelType:
    """A CEL type: a name, its parameters (list element; map key and value) and, for
    a map whose keys are known (an input model, params), the type of each field."""

    name: str  # dyn bool int uint double string bytes null_type timestamp duration list map type
    params: tuple[CelType, ...] = ()
    fields: Mapping[str, CelType] | None = field(default=None, compare=False, hash=False)

    def __str__(self) -> str:
        if self.name == "list" and self.params:
            return f"list({self.params[0]})"
        if self.name == "map" and self.params:
            return f"map({self.params[0]}, {self.params[1]})"
        return self.name

    @property
    def known(self) -> bool:
        return self.name != "dyn"


DYN = CelType("dyn")
BOOL = CelType("bool")
INT = CelType("int")
UINT = CelType("uint")
DOUBLE = CelType("double")
STRING = CelType("string")
BYTES = CelType("bytes")
NULL = CelType("null_type")
TIMESTAMP = CelType("timestamp")
DURATION = CelType("duration")
TYPE = CelType("type")


def list_of(element: CelType) -> CelType:
    return CelType("list", (element,))


def map_of(key: CelType, value: CelType, fields: Mapping[str, CelType] | None = None) -> CelType:
    return CelType("map", (key, value), fields)


def object_of(fields: Mapping[str, CelType]) -> CelType:
    """A JSON object with known fields (an input model, a params mapping)."""
    return map_of(STRING, DYN, fields)


def of_value(value: Any) -> CelType:
    """The type of a JSON-like value as ``json_to_cel`` converts it (params)."""
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, str):
        return STRING
    if value is None:
        return NULL
    if isinstance(value, list):
        return list_of(_join([of_value(v) for v in value]))
    if isinstance(value, dict):
        return object_of({str(k): of_value(v) for k, v in value.items()})
    return DYN


def _join(types: list[CelType]) -> CelType:
    """The one type all of ``types`` share, else dyn; objects whose fields differ (a
    params list of mappings with different keys) share a map type without fields."""
    if not types:
        return DYN
    first = types[0]
    if not all(t == first for t in types[1:]):
        return DYN
    fields = [None if t.fields is None else dict(t.fields) for t in types]
    if any(f != fields[0] for f in fields[1:]):
        return CelType(first.name, first.params)
    return first


_NUMERIC = frozenset({"int", "uint", "double"})
_ORDERED = frozenset({"int", "uint", "double", "string", "bytes", "bool", "timestamp", "duration"})
_SIZED = frozenset({"string", "bytes", "list", "map"})
_TYPE_NAMES = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map",
                         "null_type", "type", "timestamp", "duration"})  # fmt: skip
_CONVERSIONS = {"int": INT, "uint": UINT, "double": DOUBLE, "string": STRING,
                "bytes": BYTES, "bool": BOOL, "timestamp": TIMESTAMP, "duration": DURATION,
                "type": TYPE}  # fmt: skip
_TIME_GETTERS = frozenset({"getFullYear", "getMonth", "getDate", "getDayOfMonth",
                           "getDayOfWeek", "getDayOfYear", "getHours", "getMinutes",
                           "getSeconds", "getMilliseconds"})  # fmt: skip

# name -> (receiver or first argument, other arguments, result); None accepts any type
_Signature = tuple[frozenset[str] | None, tuple[frozenset[str] | None, ...], CelType]
_S = frozenset({"string"})
_L = frozenset({"list"})
SIGNATURES: dict[str, _Signature] = {
    "contains": (_S, (_S,), BOOL),
    "startsWith": (_S, (_S,), BOOL),
    "endsWith": (_S, (_S,), BOOL),
    "matches": (_S, (_S,), BOOL),
    "size": (_SIZED, (), INT),
    "glob": (_S, (_S,), BOOL),
    "globAny": (_L, (_S,), BOOL),
    "join": (_L, (_S,), STRING),
    "lowerAscii": (_S, (), STRING),
    "upperAscii": (_S, (), STRING),
}
"""The functions and methods the typer knows; ``cel.LIBRARY`` must be among them."""

_PREDICATE_MACROS = frozenset({"all", "exists", "exists_one", "filter"})


@dataclass(frozen=True)
class TypeIssue:
    message: str
    hint: str
    line: int
    column: int


def _where(node: Any) -> tuple[int, int]:
    """Line and column of the first positioned token under ``node`` (1, 1 if none)."""
    if isinstance(node, lark.Token):
        return node.line or 1, node.column or 1
    if isinstance(node, lark.Tree):
        for token in node.scan_values(lambda value: isinstance(value, lark.Token)):
            if token.line is not None:
                return token.line, token.column or 1
    return 1, 1


def _children(node: lark.Tree[Any]) -> list[Any]:
    return [child for child in node.children if child is not None]


def _args(node: Any) -> list[Any]:
    """The expressions of an optional ``exprlist`` child."""
    if isinstance(node, lark.Tree) and node.data == "exprlist":
        return _children(node)
    return []


def _path(node: Any) -> str | None:
    """``a.b.c`` when ``node`` is a plain field path, for messages."""
    while isinstance(node, lark.Tree) and len(node.children) == 1 and node.data != "primary":
        node = node.children[0]
    if not isinstance(node, lark.Tree):
        return None
    if node.data == "primary" and node.children:
        child = node.children[0]
        if isinstance(child, lark.Tree) and child.data == "ident":
            return str(child.children[0])
        return None
    if node.data == "member_dot":
        inner = _path(node.children[0])
        return None if inner is None else f"{inner}.{node.children[1]}"
    return None


def _named(node: Any, kind: CelType) -> str:
    path = _path(node)
    return f"`{path}` is `{kind}`" if path else f"this is `{kind}`"


class _Typer:
    def __init__(self, roots: Mapping[str, CelType]) -> None:
        self.roots = roots
        self.issues: list[TypeIssue] = []

    def issue(self, node: Any, message: str, hint: str = "") -> None:
        line, column = _where(node)
        self.issues.append(TypeIssue(message, hint, line, column))

    def type_of(self, node: Any, env: Mapping[str, CelType]) -> CelType:
        # one-child chains (every level of the grammar, parentheses) are walked in a
        # loop: deeply nested input must not exhaust the stack here
        while (
            isinstance(node, lark.Tree)
            and node.data in _PASS_THROUGH
            and len(node.children) == 1
            and node.children[0] is not None
        ):
            node = node.children[0]
        if not isinstance(node, lark.Tree):
            return DYN
        handler: Callable[[lark.Tree[Any], Mapping[str, CelType]], CelType] | None = getattr(
            self, f"_{node.data}", None
        )
        if handler is not None:
            return handler(node, env)
        children = _children(node)
        if len(children) == 1:
            return self.type_of(children[0], env)
        for child in children:  # an unexpected shape: still check inside
            self.type_of(child, env)
        return DYN

    def expect_bool(self, node: Any, kind: CelType, role: str) -> None:
        if kind.known and kind != BOOL:
            self.issue(node, f"{role} must be bool: {_named(node, kind)}", _bool_hint(node, kind))

    # -- logic

    def _expr(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        children = _children(node)
        if len(children) == 1:
            return self.type_of(children[0], env)
        condition, then, otherwise = children
        self.expect_bool(condition, self.type_of(condition, env), "the `?` condition")
        chosen = [self.type_of(then, env), self.type_of(otherwise, env)]
        known = [t for t in chosen if t != NULL]
        return _join(known) if known else NULL

    def _logical(self, node: lark.Tree[Any], env: Mapping[str, CelType], word: str) -> CelType:
        children = _children(node)
        if len(children) == 1:
            return self.type_of(children[0], env)
        for child in children:
            self.expect_bool(child, self.type_of(child, env), f"each side of `{word}`")
        return BOOL

    def _conditionalor(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        return self._logical(node, env, "||")

    def _conditionaland(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        return self._logical(node, env, "&&")

    def _unary(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        children = _children(node)
        if len(children) == 1:
            return self.type_of(children[0], env)
        operator, operand = children
        kind = self.type_of(operand, env)
        if operator.data == "unary_not":
            self.expect_bool(operand, kind, "the operand of `!`")
            return BOOL
        if kind.known and kind.name not in ("int", "double"):
            self.issue(operand, f"`-` needs an int or a double: {_named(operand, kind)}")
            return DYN
        return kind

    # -- relations

    def _relation(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        children = _children(node)
        if len(children) == 1:
            return self.type_of(children[0], env)
        operator, right_node = children
        left_node = operator.children[0]
        left, right = self.type_of(left_node, env), self.type_of(right_node, env)
        symbol = _RELATIONS[operator.data]
        if symbol == "in":
            self._check_in(node, left, right, right_node)
        elif symbol in ("==", "!="):
            if not _equatable(left, right):
                self.issue(
                    node,
                    f"`{symbol}` between `{left}` and `{right}` is an error in cel-python "
                    "(no equality across types)",
                    _conversion_hint(left, right),
                )
        elif left.known and right.known and not (left == right and left.name in _ORDERED):
            if left.name in _ORDERED and right.name in _ORDERED and left.name != right.name:
                message = f"`{symbol}` between `{left}` and `{right}` has no overload"
                self.issue(node, message, _conversion_hint(left, right))
            elif left.name not in _ORDERED or right.name not in _ORDERED:
                self.issue(node, f"`{symbol}` cannot order `{left}` and `{right}`")
        return BOOL

    def _check_in(self, node: Any, left: CelType, right: CelType, right_node: Any) -> None:
        if not right.known or right.name == "string":  # cel-python: a substring test
            return
        if right.name == "list":
            element = right.params[0] if right.params else DYN
            if not _equatable(left, element):
                self.issue(node, f"`in` looks for `{left}` in `{right}`: it can never be there",
                           _conversion_hint(left, element))  # fmt: skip
            return
        if right.name == "map":
            key = right.params[0] if right.params else DYN
            if not _equatable(left, key):
                self.issue(node, f"`in` looks for a `{left}` key in `{right}`")
            return
        self.issue(
            right_node, f"`in` needs a list or a map on its right: {_named(right_node, right)}"
        )

    # -- arithmetic

    def _arithmetic(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        children = _children(node)
        if len(children) == 1:
            return self.type_of(children[0], env)
        operator, right_node = children
        left = self.type_of(operator.children[0], env)
        right = self.type_of(right_node, env)
        symbol = _ARITHMETIC[operator.data]
        if not (left.known and right.known):
            return DYN
        result = _arithmetic_result(symbol, left, right)
        if result is None:
            self.issue(
                node, f"`{symbol}` has no overload for `{left}` and `{right}`",
                _conversion_hint(left, right),
            )  # fmt: skip
            return DYN
        return result

    _addition = _arithmetic
    _multiplication = _arithmetic

    # -- members, calls, literals

    def _member_dot(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        target, name = node.children[0], str(node.children[1])
        return self.field(node, target, self.type_of(target, env), name)

    def field(self, node: Any, target: Any, kind: CelType, name: str) -> CelType:
        if not kind.known:
            return DYN
        if kind.name == "map":
            if kind.fields is None:
                return kind.params[1] if kind.params else DYN
            if name in kind.fields:
                return kind.fields[name]
            close = difflib.get_close_matches(name, list(kind.fields), n=1)
            known = ", ".join(sorted(kind.fields)) or "none"
            where = _path(target)
            self.issue(
                node,
                f"`{where or 'this object'}` has no field `{name}`",
                f"did you mean `{close[0]}`?" if close else f"its fields: {known}",
            )
            return DYN
        self.issue(node, f"{_named(target, kind)} and has no field `{name}`")
        return DYN

    def _member_index(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        target, index_node = _children(node)
        kind, index = self.type_of(target, env), self.type_of(index_node, env)
        if not kind.known:
            return DYN
        if kind.name == "list":
            if index.known and index.name != "int":
                self.issue(index_node, f"a list index must be an int, not `{index}`")
            return kind.params[0] if kind.params else DYN
        if kind.name == "map":
            key = kind.params[0] if kind.params else DYN
            if not _equatable(index, key):
                self.issue(index_node, f"this map's keys are `{key}`, not `{index}`")
            return kind.params[1] if kind.params else DYN
        if kind.name == "string":
            return DYN  # cel-python indexes strings; CEL does not
        self.issue(node, f"{_named(target, kind)} and cannot be indexed")
        return DYN

    def _member_object(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        for child in _children(node)[1:]:
            self.type_of(child, env)
        return DYN

    def _member_dot_arg(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        children = node.children
        target, method = children[0], str(children[1])
        args = _args(children[2]) if len(children) > 2 else []
        receiver = self.type_of(target, env)
        if method in _PREDICATE_MACROS or method == "map":
            return self.macro(node, target, receiver, method, args, env)
        kinds = [self.type_of(arg, env) for arg in args]
        if method in _TIME_GETTERS:
            if receiver.known and receiver.name not in ("timestamp", "duration"):
                self.issue(node, f"`{method}` needs a timestamp: {_named(target, receiver)}")
            return INT
        return self.call(node, method, [target, *args], [receiver, *kinds])

    def macro(
        self,
        node: Any,
        target: Any,
        receiver: CelType,
        method: str,
        args: list[Any],
        env: Mapping[str, CelType],
    ) -> CelType:
        variable = _path(args[0]) if args else None
        if variable is None or "." in variable or len(args) < 2:
            return DYN  # the static analysis reports the shape
        if receiver.name in ("list", "map"):
            element = receiver.params[0] if receiver.params else DYN
        elif receiver.known and receiver.name != "string":
            self.issue(node, f"`{method}` needs a list or a map: {_named(target, receiver)}")
            element = DYN
        else:
            element = DYN
        inner = {**env, variable: element}
        if method == "map":
            if len(args) == 3:
                self.expect_bool(args[1], self.type_of(args[1], inner), "the filter of `map`")
            return list_of(self.type_of(args[-1], inner))
        predicate = args[1]
        self.expect_bool(predicate, self.type_of(predicate, inner), f"the predicate of `{method}`")
        if method == "filter":
            return list_of(element) if receiver.name == "list" else DYN
        return BOOL

    def call(self, node: Any, name: str, args: list[Any], kinds: list[CelType]) -> CelType:
        signature = SIGNATURES.get(name)
        if signature is None:
            return DYN
        first, rest, result = signature
        wanted = (first, *rest)
        for position, (arg, kind, allowed) in enumerate(zip(args, kinds, wanted, strict=False)):
            if allowed is None or not kind.known or kind.name in allowed:
                continue
            role = "its receiver" if position == 0 else f"argument {position + 1}"
            names = sorted(allowed)
            needs = (
                " or ".join(names)
                if len(names) < 3
                else (", ".join(names[:-1]) + " or " + names[-1])
            )
            self.issue(arg, f"`{name}` needs a {needs} as {role}: {_named(arg, kind)}")
        return result

    def _primary(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        return self.type_of(node.children[0], env) if node.children else DYN

    def _paren_expr(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        return self.type_of(node.children[0], env)

    def _ident(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        name = str(node.children[0])
        if name in env:
            return env[name]
        if name in self.roots:
            return self.roots[name]
        return TYPE if name in _TYPE_NAMES else DYN

    def _ident_arg(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        name = str(node.children[0])
        args = _args(node.children[1]) if len(node.children) > 1 else []
        kinds = [self.type_of(arg, env) for arg in args]
        if name == "has":
            return BOOL
        if name == "dyn":
            return DYN
        if name in _CONVERSIONS:
            return _CONVERSIONS[name]
        return self.call(node, name, args, kinds)

    def _dot_ident(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        return DYN

    def _dot_ident_arg(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        for arg in _args(node.children[1]) if len(node.children) > 1 else []:
            self.type_of(arg, env)
        return DYN

    def _list_lit(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        items = _args(node.children[0]) if node.children else []
        return list_of(_join([self.type_of(item, env) for item in items]))

    def _map_lit(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        inits = _children(node.children[0]) if node.children and node.children[0] else []
        kinds = [self.type_of(item, env) for item in inits]
        return map_of(_join(kinds[0::2]), _join(kinds[1::2]))

    def _literal(self, node: lark.Tree[Any], env: Mapping[str, CelType]) -> CelType:
        token = node.children[0]
        return _LITERALS.get(token.type, DYN) if isinstance(token, lark.Token) else DYN


_PASS_THROUGH = frozenset({"expr", "conditionalor", "conditionaland", "relation",
                           "addition", "multiplication", "unary", "member", "primary",
                           "paren_expr"})  # fmt: skip
_RELATIONS = {"relation_lt": "<", "relation_le": "<=", "relation_gt": ">", "relation_ge": ">=",
              "relation_eq": "==", "relation_ne": "!=", "relation_in": "in"}  # fmt: skip
_ARITHMETIC = {"addition_add": "+", "addition_sub": "-", "multiplication_mul": "*",
               "multiplication_div": "/", "multiplication_mod": "%"}  # fmt: skip
_LITERALS = {"INT_LIT": INT, "UINT_LIT": UINT, "FLOAT_LIT": DOUBLE, "STRING_LIT": STRING,
             "MLSTRING_LIT": STRING, "BYTES_LIT": BYTES, "BOOL_LIT": BOOL,
             "NULL_LIT": NULL}  # fmt: skip


def _equatable(left: CelType, right: CelType) -> bool:
    if not (left.known and right.known) or NULL in (left, right):
        return True
    return left.name == right.name


def _arithmetic_result(symbol: str, left: CelType, right: CelType) -> CelType | None:
    pair = (left.name, right.name)
    if symbol == "+":
        if left.name == right.name and left.name in ("int", "uint", "double", "string", "bytes",
                                                     "duration"):  # fmt: skip
            return left
        if pair == ("list", "list"):
            return list_of(_join([*left.params, *right.params]))
        if pair in (("timestamp", "duration"), ("duration", "timestamp")):
            return TIMESTAMP
        return None
    if symbol == "-":
        if left.name == right.name and left.name in ("int", "uint", "double", "duration"):
            return left
        if pair == ("timestamp", "timestamp"):
            return DURATION
        if pair == ("timestamp", "duration"):
            return TIMESTAMP
        return None
    if symbol == "%":
        return left if left.name == right.name and left.name in ("int", "uint") else None
    return left if left.name == right.name and left.name in _NUMERIC else None


def _conversion_hint(left: CelType, right: CelType) -> str:
    names = {left.name, right.name}
    if names <= _NUMERIC:
        return "convert one side, e.g. double(x) or int(x): CEL does not mix number types"
    if "string" in names and names & _NUMERIC:
        return "convert one side with string(x) or int(x)"
    return ""


def _bool_hint(node: Any, kind: CelType) -> str:
    subject = f"`{_path(node)}`" if _path(node) else "it"
    if kind.name == "string":
        return f'compare {subject}, e.g. {_path(node) or "x"} == "value", or use startsWith/glob'
    if kind.name in _NUMERIC:
        return f"compare {subject}, e.g. {_path(node) or 'x'} > 0"
    if kind.name == "list":
        return f'test its elements: "v" in {_path(node) or "x"}, .exists(x, ...), or size(...) > 0'
    if kind.name == "map":
        return f"test a field: has({_path(node) or 'x'}.field), or compare one"
    return f"compare {subject} with a value of type {kind}"


def infer(
    tree: lark.Tree[Any], roots: Mapping[str, CelType], expect: CelType | None = None
) -> tuple[CelType, list[TypeIssue]]:
    """The type of ``tree`` and the type problems in it; with ``expect`` (bool for a
    condition, string for a message), a definite result of another type is one too."""
    typer = _Typer(roots)
    result = typer.type_of(tree, {})
    if expect is not None and result.known and result not in (expect, NULL):
        if expect == BOOL:
            typer.issue(
                tree,
                f"the condition is `{result}`, not bool"
                + (f" (`{_path(tree)}`)" if _path(tree) else ""),
                _bool_hint(tree, result),
            )
        else:
            typer.issue(tree, f"the expression is `{result}`, not {expect}",
                        f"convert it with {expect}(...)")  # fmt: skip
    elif expect is not None and result == NULL:
        typer.issue(tree, f"the expression is always null, not {expect}")
    return result, typer.issues

"""CEL for policies: compile, check statically, evaluate without ever raising.

cel-python has no type checker, so a typo such as ``action.resoruce.name`` would
only surface at evaluation time, on the path actually taken, and inside ``has()``
it silently reads as false. :func:`analyse` walks the parsed tree against the
declared input schema (the pydantic models) and reports unknown identifiers,
fields, functions, bad regex literals and impossible enum comparisons at load time.
It also records which fields each expression reads, for ``explain``.

cel-python's interpreted runner is the reference (its compiled runner gives wrong
results under threads and cannot call custom functions). Each expression is also
compiled into Python closures (:mod:`guardproxy.policy.compiler`) that the engine
runs instead; an expression the compiler does not support runs on the interpreter.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import fnmatch
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import lru_cache
from importlib.metadata import version
from typing import Any

import celpy
import lark
import re2
from celpy import celtypes
from celpy.evaluation import CELEvalError, Evaluator

__all__ = [
    "CELEvalError",
    "Expression",
    "bool_result",
    "compile_expression",
    "evaluate",
    "evaluate_bool",
    "evaluate_string",
    "interpreter_only",
    "interpreting",
    "string_result",
    "to_cel",
    "to_plain",
]
from pydantic import BaseModel

from guardproxy.action import Action
from guardproxy.context import History, ResourceHistory, SessionInfo, Signals
from guardproxy.policy import compiler, typecheck
from guardproxy.policy.typecheck import CelType

CELPY_VERSION = version("cel-python")
ENGINE = f"celpy-{CELPY_VERSION}/interpreted"
"""The semantics decisions are made with: compiled expressions are held equal to the
interpreter (tests/test_cel_compiler.py), so the name stays and decision records made
before the compiler replay exactly, engine version included."""
ERROR_TEXT_LIMIT = 200

# ---------------------------------------------------------------------------
# The input schema that expressions are checked against.


@dataclass(frozen=True)
class Leaf:
    """A field with no sub-fields that CEL can name."""

    kind: str  # string | int | bool | list | map | timestamp | any
    choices: tuple[str, ...] = ()
    element: SchemaNode | None = field(default=None, compare=False, hash=False)
    """A list's element, when known."""


SchemaNode = Leaf | dict[str, "SchemaNode"]
ANY = Leaf("any")


def _leaf_for(annotation: Any, seen: frozenset[type] = frozenset()) -> SchemaNode:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _leaf_for(options[0], seen) if len(options) == 1 else ANY
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return ANY if annotation in seen else model_schema(annotation, seen)
        if issubclass(annotation, Enum):
            return Leaf("string", tuple(str(m.value) for m in annotation))
        if issubclass(annotation, bool):
            return Leaf("bool")
        if issubclass(annotation, int):
            return Leaf("int")
        if issubclass(annotation, str):
            return Leaf("string")
        if issubclass(annotation, datetime):
            return Leaf("timestamp")
    if origin is list:
        arguments = typing.get_args(annotation)
        return Leaf("list", element=_leaf_for(arguments[0], seen) if arguments else None)
    if origin is dict:
        return Leaf("map")
    return ANY


def model_schema(
    model: type[BaseModel], seen: frozenset[type] = frozenset()
) -> dict[str, SchemaNode]:
    inner = seen | {model}  # a model inside itself (Action.readings) is left untyped
    return {name: _leaf_for(info.annotation, inner) for name, info in model.model_fields.items()}


ROOT_SCHEMA: dict[str, SchemaNode] = {
    "action": model_schema(Action),
    "session": model_schema(SessionInfo),
    "history": model_schema(History),
    "resource": model_schema(ResourceHistory),
    "signals": model_schema(Signals),
    "now": Leaf("timestamp"),
}
ROOTS = (*ROOT_SCHEMA, "params", "variables")


def _cel_type(node: SchemaNode) -> CelType:
    """The CEL type a schema node has in the activation: the models' JSON, so a
    datetime inside them is a string (only the root ``now`` is a timestamp)."""
    if isinstance(node, dict):
        return typecheck.object_of({name: _cel_type(child) for name, child in node.items()})
    if node.kind == "list":
        return typecheck.list_of(_cel_type(node.element) if node.element else typecheck.DYN)
    if node.kind == "map":
        return typecheck.map_of(typecheck.STRING, typecheck.DYN)
    return _LEAF_TYPES.get(node.kind, typecheck.DYN)


_LEAF_TYPES = {"string": typecheck.STRING, "int": typecheck.INT, "bool": typecheck.BOOL,
               "timestamp": typecheck.STRING}  # fmt: skip
ROOT_TYPES: dict[str, CelType] = {
    root: typecheck.TIMESTAMP if root == "now" else _cel_type(node)
    for root, node in ROOT_SCHEMA.items()
}
# a reading is an Action (without readings of its own): the schema stops at the
# recursion, the type can refer to itself
assert ROOT_TYPES["action"].fields is not None
typing.cast(dict[str, CelType], ROOT_TYPES["action"].fields)["readings"] = typecheck.list_of(
    ROOT_TYPES["action"]
)


def _shapes(model: type[BaseModel], prefix: tuple[str, ...]) -> dict[tuple[str, ...], str]:
    """Input paths whose value is always a list or a map (a nested model): a field
    annotated so, never optional. A macro over one of them cannot fail to iterate."""
    found: dict[tuple[str, ...], str] = {}
    for name, info in model.model_fields.items():
        annotation, path = info.annotation, (*prefix, name)
        if typing.get_origin(annotation) is list:
            found[path] = "list"
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found[path] = "map"
            if annotation is not model:
                found.update(_shapes(annotation, path))
    return found


def _models(model: type[BaseModel], path: tuple[str, ...]) -> dict[tuple[str, ...], type]:
    found: dict[tuple[str, ...], type] = {path: model}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.update(_models(annotation, (*path, name)))
    return found


INPUT_MODELS = _models(Action, ("action",))
"""The model at each path of the action, which compiled code reads in place."""
INPUT_SHAPES: dict[tuple[str, ...], str] = {
    path: shape
    for root, model in (("action", Action), ("session", SessionInfo), ("history", History),
                        ("resource", ResourceHistory), ("signals", Signals))
    for path, shape in _shapes(model, (root,)).items()
}  # fmt: skip

# ---------------------------------------------------------------------------
# The function library: CEL builtins plus a few pure helpers cel-python lacks.


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return str(value)


@lru_cache(maxsize=1024)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def glob_matches(value: str, pattern: str) -> bool:
    """Shell-style glob (``*``, ``?``, ``[...]``), case-sensitive, whole string."""
    return _glob_regex(pattern).match(value) is not None


def _glob(value: Any, pattern: Any) -> bool:
    return glob_matches(_text(value), _text(pattern))


def _glob_any(values: Any, pattern: Any) -> bool:
    if not isinstance(values, list):
        raise TypeError("globAny expects a list of strings")
    regex = _glob_regex(_text(pattern))
    return any(regex.match(_text(v)) for v in values)


def _lower(value: Any) -> str:
    # str.lower() folds every letter, not only ASCII ones as CEL's lowerAscii does; the
    # decisions made with it are the reference, so it stays
    return _text(value).lower()


def _upper(value: Any) -> str:
    return _text(value).upper()


def _join(values: Any, separator: Any) -> str:
    if not isinstance(values, list):
        raise TypeError("join expects a list of strings")
    return _text(separator).join(_text(v) for v in values)


def _cel_glob(value: Any, pattern: Any) -> celtypes.BoolType:
    return celtypes.BoolType(_glob(value, pattern))


def _cel_glob_any(values: Any, pattern: Any) -> celtypes.BoolType:
    return celtypes.BoolType(_glob_any(values, pattern))


def _cel_lower(value: Any) -> celtypes.StringType:
    return celtypes.StringType(_lower(value))


def _cel_upper(value: Any) -> celtypes.StringType:
    return celtypes.StringType(_upper(value))


def _cel_join(values: Any, separator: Any) -> celtypes.StringType:
    return celtypes.StringType(_join(values, separator))


LIBRARY: dict[str, Callable[..., Any]] = {
    "glob": _cel_glob,
    "join": _cel_join,
    "globAny": _cel_glob_any,
    "lowerAscii": _cel_lower,
    "upperAscii": _cel_upper,
}
PLAIN_LIBRARY: dict[str, Callable[..., Any]] = {
    "glob": _glob,
    "join": _join,
    "globAny": _glob_any,
    "lowerAscii": _lower,
    "upperAscii": _upper,
}
"""The same functions over plain Python values, for compiled expressions."""
BUILTIN_FUNCTIONS = frozenset(
    {"size", "has", "int", "uint", "double", "string", "bytes", "bool", "timestamp", "duration",
     "type", "dyn", "matches", "contains", "startsWith", "endsWith"}
)  # fmt: skip
BUILTIN_METHODS = frozenset(
    {"size", "contains", "startsWith", "endsWith", "matches", "getFullYear", "getMonth",
     "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getHours", "getMinutes",
     "getSeconds", "getMilliseconds"}
)  # fmt: skip
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
TYPE_NAMES = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map",
                        "null_type", "type", "timestamp", "duration"})  # fmt: skip

# ---------------------------------------------------------------------------
# Compilation.


class _Runner(celpy.InterpretedRunner):
    """cel-python's interpreted runner with its base activation built once.

    The stock runner rebuilds the activation of builtin functions on every
    evaluation (most of its fixed cost); the evaluator clones it before binding
    values, so sharing one read-only base between evaluations and threads is safe.
    """

    def __init__(self, environment: Any, ast: Any, functions: Any = None) -> None:
        super().__init__(environment, ast, functions)
        self._base_activation = self.new_activation()

    def evaluate(self, context: Any) -> Any:
        return Evaluator(ast=self.ast, activation=self._base_activation).evaluate(context)


_ENVIRONMENT = celpy.Environment(runner_class=_Runner)


class CompileError(Exception):
    """A CEL expression that does not parse; line/column are 1-based in the expression."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


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


@dataclass(frozen=True)
class Expression:
    """A compiled, checked CEL expression."""

    source: str
    program: Any
    paths: frozenset[tuple[str, ...]]
    roots: frozenset[str]
    variables: frozenset[str]
    type: CelType = typecheck.DYN
    """What the expression evaluates to, as far as load-time inference can tell."""
    compiled: compiler.Compiled | None = field(default=None, compare=False, repr=False)
    """The closures the engine runs; None: the expression runs on the interpreter."""
    fallback: str = ""
    """Why the expression is not compiled (for lint), when it is not."""

    @property
    def constant(self) -> bool:
        return not self.roots


def parse(source: str) -> lark.Tree[Any]:
    try:
        return _ENVIRONMENT.compile(source)
    except celpy.CELParseError as error:  # type: ignore[attr-defined]
        line = getattr(error, "line", None)
        column = getattr(error, "column", None)
        if line is None:  # lark reports no position when the input ends too early
            lines = source.splitlines() or [""]
            line, column = len(lines), len(lines[-1]) + 1
        line, column = line or 1, column or 1
        raise CompileError(_syntax_message(source, line, column), line, column) from None
    except RecursionError:
        raise CompileError("the expression is nested too deeply") from None


def _syntax_message(source: str, line: int, column: int) -> str:
    lines = source.splitlines() or [""]
    text = lines[min(line, len(lines)) - 1]
    rest = text[column - 1 :].strip()
    if not rest and line >= len(lines):
        return "syntax error: the expression ends too early"
    return f"syntax error at `{rest[:20]}`"


def compile_expression(
    source: str,
    params: Iterable[str] | Mapping[str, Any] = (),
    variables: Iterable[str] | Mapping[str, CelType] = (),
    *,
    expect: CelType | None = None,
) -> tuple[Expression | None, list[Issue]]:
    """Parse and check ``source``; an expression with issues is not returned.

    ``params`` and ``variables`` may be names only, or map names to their values
    (params) and types (variables) for type checking; ``expect`` is the type the
    expression must have (bool for conditions, string for messages).
    """
    try:
        tree = parse(source)
    except CompileError as error:
        return None, [Issue(str(error), "check the CEL syntax", error.line, error.column)]
    try:
        analysis = analyse(tree, frozenset(params), frozenset(variables))
        if analysis.issues:
            return None, analysis.issues
        roots = {
            **ROOT_TYPES,
            "params": _params_type(params),
            "variables": typecheck.object_of(
                {name: variables[name] if isinstance(variables, Mapping) else typecheck.DYN
                 for name in variables}
            ),
        }  # fmt: skip
        result, problems = typecheck.infer(tree, roots, expect)
        if problems:
            return None, [Issue(p.message, p.hint, p.line, p.column) for p in problems]
        program = _ENVIRONMENT.program(tree, functions=LIBRARY)
    except RecursionError:  # the parser is not recursive, the checks and celpy are
        return None, [Issue("the expression is nested too deeply", "split it into variables")]
    compiled, fallback = _compile(tree, program, params, frozenset(analysis.roots))
    return (
        Expression(
            source,
            program,
            frozenset(analysis.paths),
            frozenset(analysis.roots),
            frozenset(analysis.variables),
            result,
            compiled,
            fallback,
        ),
        [],
    )


_INTERPRETER_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "guardproxy_cel_interpreter_only", default=False
)


@contextlib.contextmanager
def interpreter_only() -> Iterator[None]:
    """Expressions compiled inside this block run on cel-python's interpreter only (the
    reference, for benchmarks and differential tests)."""
    token = _INTERPRETER_ONLY.set(True)
    try:
        yield
    finally:
        _INTERPRETER_ONLY.reset(token)


def interpreting() -> bool:
    """Whether expressions compiled now run on the interpreter only (see above)."""
    return _INTERPRETER_ONLY.get()


def _compile(
    tree: lark.Tree[Any],
    program: Any,
    params: Iterable[str] | Mapping[str, Any],
    roots: frozenset[str],
) -> tuple[compiler.Compiled | None, str]:
    """The closures for ``tree``, or None and why the interpreter keeps it."""
    if _INTERPRETER_ONLY.get():
        return None, "the interpreter was asked for"
    params_cel = None
    if isinstance(params, Mapping):
        try:
            params_cel = to_cel(dict(params))
        except (TypeError, ValueError) as error:
            return None, f"its params do not convert to CEL ({error})"
    try:
        compiled = compiler.compile_tree(
            tree,
            activation=program._base_activation,
            functions=LIBRARY,
            plain_functions=PLAIN_LIBRARY,
            params_cel=params_cel,
            runtime_params=params_cel is None,
            shapes=INPUT_SHAPES,
            models=INPUT_MODELS,
            roots=roots,
        )
    except compiler.UnsupportedError as reason:
        return None, str(reason)
    except RecursionError:
        return None, "the expression is nested too deeply"
    return compiled, ""


def _params_type(params: Iterable[str] | Mapping[str, Any]) -> CelType:
    if isinstance(params, Mapping):
        return typecheck.of_value(dict(params))
    return typecheck.object_of(dict.fromkeys(params, typecheck.DYN))


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


# ---------------------------------------------------------------------------
# Evaluation that never raises.


def to_cel(value: Any) -> Any:
    return celpy.json_to_cel(value)  # type: ignore[attr-defined]


def evaluate(expression: Expression, activation: Mapping[str, Any]) -> tuple[Any, str | None]:
    """Run ``expression``; every failure, ``RecursionError`` included, becomes an error text."""
    try:
        value = expression.program.evaluate(activation)
    except CELEvalError as error:
        return None, _error_text(error)
    except RecursionError:
        return None, "internal: expression nested too deeply"
    except Exception as error:  # a bug in celpy or a library function must not escape
        return None, f"internal: {type(error).__name__}"
    return value, None


def _error_text(error: CELEvalError) -> str:
    # celpy puts the whole activation (request data) into some messages: keep the gist.
    text = str(error.args[0]) if error.args else "evaluation error"
    if len(text) > ERROR_TEXT_LIMIT:
        text = text[: ERROR_TEXT_LIMIT - 3] + "..."
    return text


def evaluate_bool(
    expression: Expression, activation: Mapping[str, Any]
) -> tuple[bool | None, str | None]:
    """A condition's result; a non-bool result is an error, never truthiness."""
    value, error = evaluate(expression, activation)
    if error is not None:
        return None, error
    if not isinstance(value, celtypes.BoolType | bool):
        return None, f"condition returned {type(value).__name__}, not bool"
    return bool(value), None


def evaluate_string(
    expression: Expression, activation: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    value, error = evaluate(expression, activation)
    if error is not None:
        return None, error
    if not isinstance(value, str):
        return None, f"message expression returned {type(value).__name__}, not string"
    return str(value), None


def bool_result(value: Any, error: str | None) -> tuple[bool | None, str | None]:
    """:func:`evaluate_bool`'s verdict on a value as compiled code holds it (see
    :mod:`guardproxy.policy.compiler`), with the same error texts."""
    if error is not None:
        return None, error
    if value is True or value is False:
        return value, None
    converted = compiler.to_cel(value)
    if not isinstance(converted, celtypes.BoolType | bool):
        return None, f"condition returned {type(converted).__name__}, not bool"
    return bool(converted), None


def string_result(value: Any, error: str | None) -> tuple[str | None, str | None]:
    """:func:`evaluate_string`'s verdict on a value as compiled code holds it."""
    if error is not None:
        return None, error
    converted = compiler.to_cel(value)
    if not isinstance(converted, str):
        return None, f"message expression returned {type(converted).__name__}, not string"
    return str(converted), None


def to_plain(value: Any) -> Any:
    """A CEL value as plain JSON-able Python, for explain output."""
    if isinstance(value, celtypes.BoolType | bool):
        return bool(value)
    if isinstance(value, celtypes.MapType | dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, celtypes.ListType | list):
        return [to_plain(v) for v in value]
    if isinstance(value, celtypes.IntType | celtypes.UintType):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    return value if value is None or isinstance(value, int | float | str) else str(value)

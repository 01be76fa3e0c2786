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

Here: parsing, compiling and evaluating expressions. The input schema is in
:mod:`guardproxy.policy._cel_schema`, the function library in
:mod:`guardproxy.policy._cel_library`, the static analysis in
:mod:`guardproxy.policy._cel_analysis`; the names other modules use are importable from here.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import celpy
import lark
from celpy import celtypes
from celpy.evaluation import CELEvalError, Evaluator

__all__ = [
    "LIBRARY",
    "PLAIN_LIBRARY",
    "CELEvalError",
    "Expression",
    "Issue",
    "bool_result",
    "check_input_path",
    "compile_expression",
    "evaluate",
    "evaluate_bool",
    "evaluate_string",
    "glob_matches",
    "interpreter_only",
    "interpreting",
    "string_result",
    "to_cel",
    "to_plain",
]

from guardproxy.policy import compiler, typecheck
from guardproxy.policy._cel_analysis import (
    Issue,
    analyse,
    check_input_path,
)
from guardproxy.policy._cel_library import (
    LIBRARY,
    PLAIN_LIBRARY,
    glob_matches,
)
from guardproxy.policy._cel_schema import (
    INPUT_MODELS,
    INPUT_SHAPES,
    ROOT_TYPES,
)
from guardproxy.policy.typecheck import CelType

CELPY_VERSION = version("cel-python")
ENGINE = f"celpy-{CELPY_VERSION}/interpreted"
"""The semantics decisions are made with: compiled expressions are held equal to the
interpreter (tests/test_cel_compiler.py), so the name stays and decision records made
before the compiler replay exactly, engine version included."""
ERROR_TEXT_LIMIT = 200

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

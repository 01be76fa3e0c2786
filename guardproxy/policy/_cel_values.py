"""The values compiled CEL works on (see :mod:`guardproxy.policy.compiler`): the environment's
slots, the failure kinds, the domain values and their conversion to and from celpy's, the
compiled node (:class:`Code`) and expression (:class:`Compiled`), and the slow path that
calls celpy's own implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from pydantic import BaseModel

# ---------------------------------------------------------------------------
# The environment a compiled expression runs in.

ROOT_SLOTS = {
    "action": 0,
    "session": 1,
    "history": 2,
    "resource": 3,
    "signals": 4,
    "now": 5,
    "params": 6,
    "variables": 7,
}
"""Where each root's value sits in the environment list; macro variables follow."""
FIRST_MACRO_SLOT = len(ROOT_SLOTS)
MAX_DEPTH = 150
"""Deeper parse trees stay on the interpreter: celpy raises ``RecursionError`` on very
deep ones (at about 700 tree levels here), which compiled code would not reproduce."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# ---------------------------------------------------------------------------
# Failures.


class CelError(Exception):
    """An error value: CEL's errors are values that logical operators may absorb."""


class RaisedError(Exception):
    """A ``CELEvalError`` that celpy raises instead of returning (a ``map``, ``filter``
    or ``exists_one`` predicate that erred): only an ``all``/``exists`` predicate or the
    top of the evaluation stops it."""


class UnsupportedError(Exception):
    """The expression uses something the compiler leaves to the interpreter."""


class _ErrorMarker:
    """An error value held while a logical operator decides whether it matters."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<error>"


ERROR_MARKER = _ErrorMarker()

R3 = 1
"""May raise :class:`RaisedError`."""
R4 = 2
"""May raise another exception."""

# ---------------------------------------------------------------------------
# Domain values.


class PyStr(str):
    """A plain Python ``str`` that celpy produced (``"a" + "b"``, ``"abc"[0]``): unlike
    ``StringType`` it has no ``.contains()``."""

    __slots__ = ()


class Raw:
    """A plain Python value celpy produced that is not a celtypes value (``1.5 + 1.0``
    is a plain ``float``, ``[1] + [2]`` a plain ``list``); only the slow path reads it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Raw({self.value!r})"


_PLAIN_TYPES = frozenset({int, float, bool, list, tuple, dict, bytes, set, frozenset})
FAST_SCALARS = frozenset({str, int, bool, float})
STR_TYPES = frozenset({str, PyStr})


def to_cel(value: Any) -> Any:
    """The celpy value a domain value stands for."""
    kind = type(value)
    if kind is str:
        return celtypes.StringType(value)
    if kind is bool:
        return celtypes.BoolType(value)
    if kind is int:
        return celtypes.IntType(value)
    if kind is float:
        return celtypes.DoubleType(value)
    if kind is list:
        return celtypes.ListType([to_cel(item) for item in value])
    if kind is dict:
        return celtypes.MapType({to_cel(k): to_cel(v) for k, v in value.items()})
    if kind is PyStr:
        return str.__str__(value)
    if kind is Raw:
        return value.value
    if isinstance(value, BaseModel):  # a model read in place stands for its JSON
        return _json_to_cel(value.model_dump(mode="json"))
    if kind.__module__ == celtypes.__name__ or isinstance(value, CELEvalError):
        return value
    if isinstance(value, str | int | float | list | tuple | dict):
        # a subclass in a JSON document (an enum member): json_to_cel's reading
        return _json_to_cel(value)
    return value


def _json_to_cel(value: Any) -> Any:
    return json_to_cel(value)


def from_cel(value: Any) -> Any:
    """A celpy result as a domain value; an error value raises :class:`CelError`."""
    kind = type(value)
    if kind is celtypes.BoolType:
        return bool(value)
    if kind is celtypes.StringType:
        return str.__str__(value)
    if kind is celtypes.IntType:
        return int(value)
    if kind is celtypes.DoubleType:
        return float(value)
    if kind is str:
        return PyStr(value)
    if kind in _PLAIN_TYPES:
        return Raw(value)
    if isinstance(value, CELEvalError):
        raise CelError(*value.args[:1])
    return value


def from_cel_deep(value: Any) -> Any:
    """A constant celpy value as a domain value, containers converted too where that is
    exact (so ``x in ["a", "b"]`` and params lists take the fast paths)."""
    kind = type(value)
    if kind is celtypes.ListType:
        return [from_cel_deep(item) for item in value]
    if kind is celtypes.MapType:
        if all(type(k) is celtypes.StringType for k in value) and not any(
            isinstance(v, CELEvalError) for v in value.values()
        ):
            return {str.__str__(k): from_cel_deep(v) for k, v in value.items()}
        return value
    return from_cel(value)


def truthy(value: Any) -> bool:
    """Python's truth of the celpy value (what celpy's ``?:``, ``filter`` and
    ``exists_one`` test, rather than CEL's bool)."""
    return bool(value.value) if type(value) is Raw else bool(value)


# ---------------------------------------------------------------------------
# Compiled code.

Fn = Callable[[list[Any]], Any]


@dataclass(frozen=True)
class Code:
    """One compiled node: its closure, how it may fail beyond error values, and, for a
    constant, its value (``constant`` with ``fn`` raising for a constant error)."""

    fn: Fn
    raises: int = 0
    constant: bool = False
    value: Any = None
    shape: str = ""
    """``list`` or ``map`` when the value is surely one (a macro over it cannot fail)."""


@dataclass(frozen=True)
class Compiled:
    """A compiled expression: ``run(environment)`` returns its domain value or raises."""

    fn: Fn
    slots: int
    roots: frozenset[str] = field(default_factory=frozenset)
    documents: tuple[tuple[int, str], ...] = field(init=False)
    """(slot, root) of the input documents it reads, for the caller to fill."""
    reads_now: bool = field(init=False)

    def __post_init__(self) -> None:
        documents = tuple(sorted((ROOT_SLOTS[r], r) for r in self.roots if r in _DOCUMENT_ROOTS))
        object.__setattr__(self, "documents", documents)
        object.__setattr__(self, "reads_now", "now" in self.roots)

    def run(self, environment: list[Any]) -> Any:
        if self.slots:
            return self.fn(environment + [None] * self.slots)
        return self.fn(environment)


def constant_code(value: Any) -> Code:
    return Code(lambda env: value, constant=True, value=value, shape=_shape_of(value))


def failing_code(kind: type[Exception], message: str, raises: int) -> Code:
    def fail(env: list[Any]) -> Any:
        raise kind(message)

    return Code(fail, raises, constant=True, value=ERROR_MARKER)


def escaping_code(error: Exception) -> Code:
    """A constant part that makes celpy raise ``error`` (a macro over a number): raise a
    new exception of its class each time (a ``TypeError`` is caught by ``?:``)."""
    kind, args = type(error), error.args
    try:
        kind(*args)
    except Exception:
        raise UnsupportedError(f"a constant part always fails ({kind.__name__})") from None

    def escape(env: list[Any]) -> Any:
        raise kind(*args)

    return Code(escape, R4, constant=True, value=ERROR_MARKER)


def _shape_of(value: Any) -> str:
    kind = type(value)
    return "list" if kind is list else "map" if kind is dict else ""


# ---------------------------------------------------------------------------
# Slow paths: celpy's own implementation, with the exceptions its tree node catches.


def call_cel(
    function: Callable[..., Any], args: Iterable[Any], catch: tuple[type[Exception], ...]
) -> Any:
    converted = [to_cel(arg) for arg in args]
    try:
        result = function(*converted)
    except catch as error:
        raise CelError(f"{type(error).__name__}: {error}") from None
    return from_cel(result)


RELATION_CATCH = (TypeError,)
ADDITION_CATCH = (TypeError, ValueError, OverflowError)
MULTIPLICATION_CATCH = (TypeError, ZeroDivisionError, ValueError, OverflowError)
UNARY_CATCH = (TypeError, ValueError)
INDEX_CATCH = (TypeError, KeyError, IndexError)
FUNCTION_CATCH = (ValueError, TypeError, AttributeError)

INPUT_ROOTS = frozenset({"action", "session", "history", "resource", "signals", "now"})
_DOCUMENT_ROOTS = INPUT_ROOTS - {"now"}

"""CEL compiled once, at load, into a tree of Python closures that behave as cel-python's
interpreter does.

cel-python 0.5 (``celpy``) is the reference: every decision the engine made with it must
stay the same. Its interpreter walks the lark tree with a visitor, resolves every name
through chained name containers and wraps every value in its ``celtypes``; most of a
decision's time went there and into converting the input to those types. The closures
here read the capped JSON documents directly (plain ``dict``/``list``/``str``/``int``/
``bool``/``None``) and only fall back to celpy's own operator and function
implementations, on converted values, for the combinations they have no fast path for.

How equality with the reference is kept
    *Values.* A value inside compiled code (a "domain" value) stands for one celpy
    value: ``str`` for ``StringType``, ``int`` for ``IntType``, ``bool`` for
    ``BoolType``, ``float`` for ``DoubleType``, ``list``/``dict`` for ``ListType``/
    ``MapType`` of their converted items, ``None`` for null. celpy sometimes produces
    *plain* Python values whose behaviour differs from the celtypes ones (``"a" + "b"``
    is a plain ``str``, on which ``.contains()`` is an error; ``1.5 + 1.0`` a plain
    ``float``, which equals ``2``): those become :class:`PyStr` and :class:`Raw`, so
    they are never mistaken for the others. Every other celpy value (``UintType``,
    ``TimestampType``, celpy containers...) is kept as it is. :func:`to_cel` gives a
    domain value's celpy value, :func:`from_cel` the other way round.

    *Fast paths* are guarded by exact types (``type(x) is str``) and compute what celpy
    computes for those types; everything else goes through the *slow path*: the celpy
    function the interpreter would call, on :func:`to_cel` values, with the exceptions
    the interpreter's tree node turns into error values.

    *Errors.* celpy has three ways of failing, and they differ in who may absorb them:

    1. an error *value* (``CELEvalError`` returned): ``&&``, ``||``, ``?:``, ``has()``,
       ``all()`` and ``exists()`` absorb it as CEL says; here :class:`CelError`;
    2. a ``CELEvalError`` *raised* (``map``, ``filter`` and ``exists_one`` raise when
       their predicate errs): it passes ``&&`` and ``||`` and stops only at an ``all``/
       ``exists`` predicate or the top; here :class:`RaisedError`;
    3. any other exception (a macro over a number, ``int(1.0/0.0)``): it escapes the
       whole evaluation, except a ``TypeError`` inside the chosen branch of ``?:``,
       which that node turns into an error value; here the exception itself.

    celpy evaluates both sides of ``&&``/``||`` and every element of a macro, so a
    failure of kind 2 or 3 on the side CEL would skip still fails the expression.
    Compiled code skips a side only when it cannot fail that way (:attr:`Code.raises`).

    *Constants* (sub-expressions reading no input) are evaluated once, at compile time,
    by celpy itself.

    The differential test (``tests/test_cel_compiler.py``) runs both on generated
    expressions and inputs. Where celpy departs from the CEL specification, the
    closures follow celpy (comments say where); the decisions must not change.

What is not compiled
    Map literals that read input, ``.ident`` names, message construction, macros with
    another shape than ``x.m(v, e)``, ``has``/``dyn`` without exactly one argument and
    very deep expressions raise :class:`UnsupportedError`: such an expression runs on the
    interpreter, and ``guardproxy policy lint`` says so.

Thread safety: the closures hold no mutable state; each evaluation passes its own
environment (a list: the roots, then one slot per macro variable).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import datetime
import operator
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import lark
import re2
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import (
    Activation,
    CELEvalError,
    Evaluator,
    base_functions,
    bool_eq,
    bool_ge,
    bool_gt,
    bool_le,
    bool_lt,
    bool_ne,
    function_getDate,
    function_getDayOfMonth,
    function_getDayOfWeek,
    function_getDayOfYear,
    function_getFullYear,
    function_getHours,
    function_getMilliseconds,
    function_getMinutes,
    function_getMonth,
    function_getSeconds,
    function_matches,
    operator_in,
)
from pydantic import BaseModel

__all__ = [
    "ROOT_SLOTS",
    "CelError",
    "Compiled",
    "PyStr",
    "RaisedError",
    "Raw",
    "UnsupportedError",
    "compile_tree",
    "from_cel",
    "from_cel_deep",
    "to_cel",
    "unfolded",
]

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
_FIRST_MACRO_SLOT = len(ROOT_SLOTS)
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


_ERROR = _ErrorMarker()

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
_FAST_SCALARS = frozenset({str, int, bool, float})
_STRS = frozenset({str, PyStr})


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


def _constant(value: Any) -> Code:
    return Code(lambda env: value, constant=True, value=value, shape=_shape_of(value))


def _failing(kind: type[Exception], message: str, raises: int) -> Code:
    def fail(env: list[Any]) -> Any:
        raise kind(message)

    return Code(fail, raises, constant=True, value=_ERROR)


def _escaping(error: Exception) -> Code:
    """A constant part that makes celpy raise ``error`` (a macro over a number): raise a
    new exception of its class each time (a ``TypeError`` is caught by ``?:``)."""
    kind, args = type(error), error.args
    try:
        kind(*args)
    except Exception:
        raise UnsupportedError(f"a constant part always fails ({kind.__name__})") from None

    def escape(env: list[Any]) -> Any:
        raise kind(*args)

    return Code(escape, R4, constant=True, value=_ERROR)


def _shape_of(value: Any) -> str:
    kind = type(value)
    return "list" if kind is list else "map" if kind is dict else ""


# ---------------------------------------------------------------------------
# Slow paths: celpy's own implementation, with the exceptions its tree node catches.


def _call_cel(
    function: Callable[..., Any], args: Iterable[Any], catch: tuple[type[Exception], ...]
) -> Any:
    converted = [to_cel(arg) for arg in args]
    try:
        result = function(*converted)
    except catch as error:
        raise CelError(f"{type(error).__name__}: {error}") from None
    return from_cel(result)


_RELATION_CATCH = (TypeError,)
_ADDITION_CATCH = (TypeError, ValueError, OverflowError)
_MULTIPLICATION_CATCH = (TypeError, ZeroDivisionError, ValueError, OverflowError)
_UNARY_CATCH = (TypeError, ValueError)
_INDEX_CATCH = (TypeError, KeyError, IndexError)
_FUNCTION_CATCH = (ValueError, TypeError, AttributeError)


def _member(value: Any, name: str) -> Any:
    """``value.name``: celpy's ``member_dot`` for what is not a plain ``dict``."""
    if type(value) is dict:
        try:
            return value[name]
        except KeyError:
            raise CelError(f"no such member in mapping: {name!r}") from None
    if isinstance(value, BaseModel):
        reader = _readers(type(value)).get(name)
        if reader is None:
            raise CelError(f"no such member in mapping: {name!r}")
        return reader(value)
    converted = to_cel(value)
    if isinstance(converted, celtypes.MessageType):
        return from_cel(converted.get(name))  # celpy lets a KeyError escape here
    if isinstance(converted, celtypes.MapType):
        try:
            return from_cel(converted[name])
        except KeyError:
            raise CelError(f"no such member in mapping: {name!r}") from None
    raise CelError(f"{type(converted).__name__} does not support field selection")


# ---------------------------------------------------------------------------
# Models read in place: a pydantic model (the action) stands for its JSON dump,
# ``model_dump(mode="json")``, without making it. Each field is read as the dump has it
# when its value is of the annotated type (a ``str`` field holding a ``str``, an enum
# field one of its members, a model field a model...), and through pydantic's
# serializer, field by field, otherwise (a ``model_copy(update=...)`` can put anything
# there; datetimes). Every operation but ``.field`` dumps the model first (``to_cel``).

_READERS: dict[type[BaseModel], dict[str, Callable[[Any], Any]]] = {}


def _readers(model: type[BaseModel]) -> dict[str, Callable[[Any], Any]]:
    readers = _READERS.get(model)
    if readers is None:
        fields = model.model_fields.items()
        readers = {name: _reader(name, info.annotation) for name, info in fields}
        _READERS[model] = readers
    return readers


def _dumped(instance: BaseModel, name: str) -> Any:
    """The field as ``model_dump(mode="json")`` has it."""
    serializer = type(instance).__pydantic_serializer__
    return serializer.to_python(instance, mode="json", include={name})[name]


def _reader(name: str, annotation: Any) -> Callable[[Any], Any]:
    exact: type | None = None
    if annotation in (str, int, bool) or (
        isinstance(annotation, type) and issubclass(annotation, BaseModel)
    ):
        exact = annotation
    if exact is not None:
        kind = exact

        def read_exact(instance: Any) -> Any:
            value = instance.__dict__[name]
            return value if type(value) is kind else _dumped(instance, name)

        return read_exact
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        enum = annotation
        if not all(type(member.value) is str for member in enum):
            return lambda instance: _dumped(instance, name)

        def read_enum(instance: Any) -> Any:
            value = instance.__dict__[name]
            return value._value_ if type(value) is enum else _dumped(instance, name)

        return read_enum
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if item is str or (isinstance(item, type) and issubclass(item, BaseModel)):
            item_kind = item

            def read_list(instance: Any) -> Any:
                value = instance.__dict__[name]
                if type(value) is list and all(type(v) is item_kind for v in value):
                    return value
                return _dumped(instance, name)

            return read_list
    return lambda instance: _dumped(instance, name)


def _iterate(value: Any) -> Iterable[Any]:
    """What celpy's macros iterate over ``value``: a list's items, a map's keys, a
    string's characters (plain ``str``), and a ``TypeError`` for anything else."""
    kind = type(value)
    if kind is list or kind is dict:
        return value  # type: ignore[no-any-return]
    return [from_cel(item) for item in to_cel(value)]


# ---------------------------------------------------------------------------
# Operators.


def _and(left: Any, right: Any) -> Any:
    """celpy's ``logical_and`` over domain values (``_ERROR`` for an error value); a
    non-bool operand can be the result (``1 && true`` is ``1`` in celpy)."""
    if left is True or left is False:
        if right is True or right is False:
            return left and right
        return right if left else False
    if right is True:
        return left
    if right is False:
        return False
    return _ERROR  # TypeError in celpy, an error value


def _or(left: Any, right: Any) -> Any:
    """celpy's ``logical_or`` over domain values."""
    if left is True or left is False:
        if right is True or right is False:
            return left or right
        return True if left else right
    if right is True:
        return True
    if right is False:
        return left
    return _ERROR


def _value(result: Any) -> Any:
    if result is _ERROR:
        raise CelError("no matching overload for a logical operator, or an operand failed")
    return result


_EQUALITY = {"relation_eq": (operator.eq, bool_eq), "relation_ne": (operator.ne, bool_ne)}
_ORDER = {
    "relation_lt": (operator.lt, bool_lt),
    "relation_le": (operator.le, bool_le),
    "relation_gt": (operator.gt, bool_gt),
    "relation_ge": (operator.ge, bool_ge),
}


def _slow_relation(cel_function: Callable[..., Any], left: Any, right: Any) -> Any:
    return _call_cel(cel_function, (left, right), _RELATION_CATCH)


def _in(item: Any, container: Any) -> Any:
    kind = type(container)
    if type(item) in _STRS:  # celpy compares a str (a PyStr too) with str equality
        if kind is list:
            try:
                if item in container:
                    return True
            except TypeError:  # a celtypes item (IntType, ListType...) refuses str equality
                return _slow_relation(operator_in, item, container)
            for element in container:
                if type(element) is not str:
                    return _slow_relation(operator_in, item, container)
            return False
        if kind is dict:  # keys are strings: JSON objects and constants only
            return item in container
    return _slow_relation(operator_in, item, container)


def _add(left: Any, right: Any) -> Any:
    kind = type(left)
    if kind is int and type(right) is int:
        result = left + right
        if INT64_MIN <= result <= INT64_MAX:
            return result
        raise CelError("return error for overflow")
    if kind in _STRS and type(right) in _STRS:
        return PyStr(str.__add__(left, right))  # celpy: StringType + StringType is a str
    return _call_cel(operator.add, (left, right), _ADDITION_CATCH)


def _sub(left: Any, right: Any) -> Any:
    if type(left) is int and type(right) is int:
        result = left - right
        if INT64_MIN <= result <= INT64_MAX:
            return result
        raise CelError("return error for overflow")
    return _call_cel(operator.sub, (left, right), _ADDITION_CATCH)


def _mul(left: Any, right: Any) -> Any:
    if type(left) is int and type(right) is int:
        result = left * right
        if INT64_MIN <= result <= INT64_MAX:
            return result
        raise CelError("return error for overflow")
    return _call_cel(operator.mul, (left, right), _MULTIPLICATION_CATCH)


def _div(left: Any, right: Any) -> Any:
    return _call_cel(operator.truediv, (left, right), _MULTIPLICATION_CATCH)


def _mod(left: Any, right: Any) -> Any:
    return _call_cel(operator.mod, (left, right), _MULTIPLICATION_CATCH)


_ARITHMETIC: dict[str, tuple[Callable[[Any, Any], Any], int]] = {
    "addition_add": (_add, 0),
    "addition_sub": (_sub, 0),
    "multiplication_mul": (_mul, R4),  # "a" * 2**62 runs out of memory in celpy too
    "multiplication_div": (_div, 0),
    "multiplication_mod": (_mod, 0),
}


def _neg(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        if value == INT64_MIN:
            raise CelError("return error for overflow")
        return -value
    if kind is float:
        return -value
    return _call_cel(operator.neg, (value,), _UNARY_CATCH)


def _index(container: Any, key: Any) -> Any:
    kind = type(container)
    if kind is dict and type(key) is str:
        try:
            return container[key]
        except KeyError:
            raise CelError("no such key") from None
    if kind is list and type(key) is int:
        try:
            return container[key]  # celpy indexes a list as Python does: -1 is the last
        except IndexError:
            raise CelError("invalid_argument") from None
    return _call_cel(operator.getitem, (container, key), _INDEX_CATCH)


# ---------------------------------------------------------------------------
# Functions and methods (receiver first), with fast paths for the common types.


def _size(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is list or kind is dict:
        return len(value)
    if value is None:
        return 0  # celpy: size(null) is 0
    return _call_cel(base_functions["size"], (value,), _FUNCTION_CATCH)


def _starts_with(value: Any, prefix: Any) -> Any:
    if type(value) in _STRS and type(prefix) in _STRS:
        return value.startswith(prefix)
    return _call_cel(base_functions["startsWith"], (value, prefix), _FUNCTION_CATCH)


def _ends_with(value: Any, suffix: Any) -> Any:
    if type(value) in _STRS and type(suffix) in _STRS:
        return value.endswith(suffix)
    return _call_cel(base_functions["endsWith"], (value, suffix), _FUNCTION_CATCH)


def _contains(value: Any, part: Any) -> Any:
    # only StringType has .contains(): a plain str (PyStr) is an error in celpy
    if type(value) is str and type(part) in _STRS:
        return part in value
    return _call_cel(base_functions["contains"], (value, part), _FUNCTION_CATCH)


def _matches(value: Any, pattern: Any) -> Any:
    return _call_cel(function_matches, (value, pattern), _FUNCTION_CATCH)


_TIME_METHODS: dict[str, Callable[..., Any]] = {
    "getDate": function_getDate,
    "getDayOfMonth": function_getDayOfMonth,
    "getDayOfWeek": function_getDayOfWeek,
    "getDayOfYear": function_getDayOfYear,
    "getFullYear": function_getFullYear,
    "getMonth": function_getMonth,
    "getHours": function_getHours,
    "getMilliseconds": function_getMilliseconds,
    "getMinutes": function_getMinutes,
    "getSeconds": function_getSeconds,
}


_UTC_FIELDS: dict[str, Callable[[datetime.datetime], int]] = {
    "getDate": lambda t: t.day,
    "getDayOfMonth": lambda t: t.day - 1,
    "getDayOfWeek": lambda t: t.isoweekday() % 7,
    "getDayOfYear": lambda t: t.toordinal() - datetime.date(t.year, 1, 1).toordinal(),
    "getFullYear": lambda t: t.year,
    "getMonth": lambda t: t.month - 1,
    "getHours": lambda t: t.hour,
    "getMilliseconds": lambda t: t.microsecond // 1000,
    "getMinutes": lambda t: t.minute,
    "getSeconds": lambda t: t.second,
}
"""celpy's ``TimestampType`` getters without a time zone: the field of the time in UTC
(``astimezone(UTC)``; ``getMonth`` and ``getDayOfMonth`` count from 0)."""


def _time_method(name: str) -> Callable[..., Any]:
    function, field_of = _TIME_METHODS[name], _UTC_FIELDS[name]

    def call(value: Any, *args: Any) -> Any:
        if not args and type(value) is celtypes.TimestampType:
            try:  # the wall time less its offset is the time in UTC, as plain datetimes
                wall = datetime.datetime(value.year, value.month, value.day, value.hour,
                                         value.minute, value.second, value.microsecond)  # fmt: skip
                offset = value.utcoffset()
                return field_of(wall if offset is None else wall - offset)
            except Exception:  # out of range: celpy, below, says what happens
                pass
        return _call_cel(function, (value, *args), _FUNCTION_CATCH)

    return call


class _Library:
    """Fast paths for guardproxy's functions (``cel.LIBRARY``), whose celpy versions
    take and return celtypes; ``plain`` holds their Python versions, same code."""

    def __init__(self, cel_functions: Mapping[str, Callable[..., Any]],
                 plain: Mapping[str, Callable[..., Any]]) -> None:  # fmt: skip
        self.cel = cel_functions
        self.plain = plain

    def function(self, name: str) -> Callable[..., Any] | None:
        cel_function = self.cel.get(name)
        plain = self.plain.get(name)
        if cel_function is None or plain is None:
            return None
        if name in ("glob",):

            def glob(value: Any, pattern: Any) -> Any:
                if type(value) is str and type(pattern) is str:
                    return plain(value, pattern)
                return _call_cel(cel_function, (value, pattern), _FUNCTION_CATCH)

            return glob
        if name in ("globAny", "join"):

            def over_list(values: Any, text: Any) -> Any:
                if type(values) is list and type(text) is str:
                    try:
                        return plain(values, text)
                    except TypeError:  # an item that is not a string, as in celpy
                        raise CelError("no such overload") from None
                return _call_cel(cel_function, (values, text), _FUNCTION_CATCH)

            return over_list
        if name in ("lowerAscii", "upperAscii"):

            def case(value: Any) -> Any:
                if type(value) is str:
                    return plain(value)
                return _call_cel(cel_function, (value,), _FUNCTION_CATCH)

            return case
        return None


# ---------------------------------------------------------------------------
# The compiler.

_PASS_THROUGH = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition",
                           "multiplication", "unary", "member"})  # fmt: skip
_CEL_VISITABLE = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition",
                            "multiplication", "unary", "member", "member_dot",
                            "member_dot_arg", "member_index", "member_object", "primary",
                            "literal"})  # fmt: skip
_UNCOMPILED = {
    "map_lit": "a map literal that reads the input",
    "dot_ident": "a name with a leading dot",
    "dot_ident_arg": "a function named with a leading dot",
    "member_object": "message construction",
}
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_CELPY_MACROS = _MACROS | {"reduce", "min"}
_LIBRARY_ARITY = {"glob": 2, "globAny": 2, "join": 2, "lowerAscii": 1, "upperAscii": 1}
_QUIET_CALLS = {"size": 1, "startsWith": 2, "endsWith": 2, "contains": 2, "matches": 2,
                **dict.fromkeys(_TIME_METHODS, 1), **_LIBRARY_ARITY}  # fmt: skip
"""Functions (and their argument counts) that fail only with error values; a time
method with a time zone argument can raise (an unknown zone), so can conversions."""
_INPUT_ROOTS = frozenset({"action", "session", "history", "resource", "signals", "now"})
_DOCUMENT_ROOTS = _INPUT_ROOTS - {"now"}


def _children(node: lark.Tree[Any]) -> list[Any]:
    return [child for child in node.children if child is not None]


def _args(node: Any) -> list[Any]:
    if isinstance(node, lark.Tree) and node.data == "exprlist":
        return _children(node)
    return []


def _single_ident(node: Any) -> str | None:
    """The name when ``node`` is nothing but one identifier."""
    while isinstance(node, lark.Tree) and len(node.children) == 1 and node.data != "ident":
        node = node.children[0]
    if isinstance(node, lark.Tree) and node.data == "ident":
        return str(node.children[0])
    return None


def _depth(node: Any) -> int:
    deepest = 0
    stack = [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(current, lark.Tree):
            stack.extend((child, level + 1) for child in current.children)
    return deepest


class _Compiler:
    def __init__(
        self,
        *,
        activation: Activation,
        params_cel: Any,
        runtime_params: bool,
        library: _Library,
        shapes: Mapping[tuple[str, ...], str],
        models: Mapping[tuple[str, ...], type[BaseModel]],
    ) -> None:
        self.activation = activation
        self.params_cel = params_cel
        self.runtime_params = runtime_params
        self.library = library
        self.shapes = shapes
        self.models = models
        self.functions = collections.ChainMap(dict(library.cel), base_functions)
        self.folding = _FOLDING.get()
        self.slots = 0
        self.free_cache: dict[int, frozenset[str]] = {}

    # -- which names a subtree reads from outside itself

    def free(self, node: Any) -> frozenset[str]:
        key = id(node)
        cached = self.free_cache.get(key)
        if cached is not None:
            return cached
        result: frozenset[str]
        if not isinstance(node, lark.Tree):
            result = frozenset()
        elif node.data == "ident":
            result = frozenset({str(node.children[0])})
        elif node.data in ("ident_arg", "dot_ident_arg"):  # the name is a function
            result = frozenset().union(*(self.free(a) for a in _children(node)[1:]))
        elif node.data == "member_dot_arg" and str(node.children[1]) in _CELPY_MACROS:
            args = _args(node.children[2]) if len(node.children) > 2 else []
            names = set(self.free(node.children[0]))
            variable = _single_ident(args[0]) if args else None
            for arg in args[1:]:
                names |= self.free(arg) - {variable}
            result = frozenset(names)
        else:
            result = frozenset().union(*(self.free(c) for c in node.children))
        self.free_cache[key] = result
        return result

    def runtime_names(self, scope: Mapping[str, int]) -> frozenset[str]:
        names = set(_INPUT_ROOTS) | {"variables"} | set(scope)
        if self.runtime_params:
            names.add("params")
        return frozenset(names)

    # -- constants, evaluated by celpy

    def fold(self, node: lark.Tree[Any]) -> Code:
        evaluator = Evaluator(ast=node, activation=self.activation)
        if "params" in self.free(node) and not self.runtime_params:
            evaluator.set_activation({"params": self.params_cel})
        try:
            value = evaluator.visit(node)
        except CELEvalError as error:
            return _failing(RaisedError, str(error.args[0]) if error.args else "", R3)
        except RecursionError:
            raise UnsupportedError("the expression is nested too deeply") from None
        except Exception as error:  # a constant that always escapes celpy's evaluation
            return _escaping(error)
        if isinstance(value, CELEvalError):
            return _failing(CelError, str(value.args[0]) if value.args else "", 0)
        return _constant(from_cel_deep(value))

    # -- the walk

    def compile(self, node: Any, scope: Mapping[str, int]) -> Code:
        while (
            isinstance(node, lark.Tree) and node.data in _PASS_THROUGH and len(_children(node)) == 1
        ):
            node = _children(node)[0]
        if not isinstance(node, lark.Tree):
            raise UnsupportedError(f"unexpected token {node!r}")
        if node.data in _CEL_VISITABLE and not (self.free(node) & self.runtime_names(scope)):
            if self.folding:
                return self.fold(node)
            try:  # compare the closures on constants too (the differential test)
                return self.structure(node, scope)
            except UnsupportedError:
                return self.fold(node)
        return self.structure(node, scope)

    def structure(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        handler: Callable[[lark.Tree[Any], Mapping[str, int]], Code] | None = getattr(
            self, f"_{node.data}", None
        )
        if handler is None:
            what = _UNCOMPILED.get(node.data, f"`{node.data}`")
            raise UnsupportedError(f"the compiler leaves {what} to it")
        return handler(node, scope)

    def _primary(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        (child,) = _children(node)
        return self.compile(child, scope)

    def _paren_expr(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        (child,) = _children(node)
        return self.compile(child, scope)

    # -- names

    def _ident(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        name = str(node.children[0])
        if name in scope:
            slot = scope[name]
            return Code(lambda env: env[slot])
        if name == "params":
            slot = ROOT_SLOTS["params"]
            return Code(lambda env: env[slot], shape="map")
        if name in _INPUT_ROOTS:
            slot = ROOT_SLOTS[name]
            return Code(lambda env: env[slot], shape="" if name == "now" else "map")
        raise UnsupportedError(f"`{name}` is read on its own")  # `variables` without a name

    def _member_dot(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        target, name = node.children[0], str(node.children[1])
        if _single_ident(target) == "variables" and "variables" not in scope:
            return self.variable(name)
        path = self.root_path(node, scope)
        inner = self.compile(target, scope)
        get = inner.fn
        shape = self.shapes.get(path, "") if path else ""
        model = self.models.get(path[:-1]) if path else None
        reader = _readers(model).get(name) if model is not None else None
        if model is not None and reader is not None:
            read = reader  # the action read in place: the model this path holds

            def field(env: list[Any]) -> Any:
                value = get(env)
                if type(value) is model:
                    return read(value)
                return _member(value, name)

            return Code(field, inner.raises, shape=shape)

        def member(env: list[Any]) -> Any:
            value = get(env)
            if type(value) is dict:
                try:
                    return value[name]
                except KeyError:
                    raise CelError(f"no such member in mapping: {name!r}") from None
            return _member(value, name)

        return Code(member, inner.raises, shape=shape)

    def root_path(self, node: Any, scope: Mapping[str, int]) -> tuple[str, ...] | None:
        names: list[str] = []
        while isinstance(node, lark.Tree):
            if node.data == "member_dot":
                names.append(str(node.children[1]))
                node = node.children[0]
            elif node.data in ("member", "primary") and len(_children(node)) == 1:
                node = _children(node)[0]
            elif node.data == "ident":
                root = str(node.children[0])
                if root in scope or root not in _INPUT_ROOTS:
                    return None
                return (root, *reversed(names))
            else:
                return None
        return None

    def variable(self, name: str) -> Code:
        slot = ROOT_SLOTS["variables"]

        def read(env: list[Any]) -> Any:
            value = env[slot][name]
            if type(value) is CELEvalError:
                raise CelError(str(value.args[0]) if value.args else "variable failed")
            return value

        return Code(read)

    # -- logic

    def _expr(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        condition, then, otherwise = (self.compile(c, scope) for c in _children(node))
        test, first, second = condition.fn, then.fn, otherwise.fn

        def choose(env: list[Any]) -> Any:
            try:
                chosen = test(env)
            except CelError:
                chosen = _ERROR
            if chosen is True:
                branch = first
            elif chosen is False:
                branch = second
            else:
                # celpy visits the branch Python's truth picks, then fails: `?:` needs a bool
                branch = first if chosen is _ERROR or truthy(chosen) else second
                with contextlib.suppress(CelError, TypeError):
                    branch(env)
                raise CelError("found no matching overload for _?_:_")
            try:
                return branch(env)
            except TypeError as error:  # celpy turns a TypeError in the branch into an error
                raise CelError(str(error)) from None

        return Code(choose, condition.raises | then.raises | otherwise.raises)

    def operands(self, node: Any, kind: str, scope: Mapping[str, int]) -> list[Code]:
        """The operands of a left-nested chain of ``&&`` (or ``||``), in order."""
        chain: list[Any] = []
        while isinstance(node, lark.Tree) and node.data == kind and len(_children(node)) == 2:
            left, right = _children(node)
            chain.append(right)
            node = left
        chain.append(node)
        return [self.compile(operand, scope) for operand in reversed(chain)]

    def logical(self, node: lark.Tree[Any], scope: Mapping[str, int], *, is_and: bool) -> Code:
        codes = self.operands(node, node.data, scope)
        functions = [code.fn for code in codes]
        raises = 0
        for code in codes:
            raises |= code.raises
        # after operand i, may the rest be skipped once the result is decided?
        quiet_rest = [not any(c.raises for c in codes[i + 1 :]) for i in range(len(codes))]
        combine = _and if is_and else _or
        decided = not is_and
        steps = list(zip(functions, quiet_rest, strict=True))
        first_fn, first_quiet = steps[0]
        rest = steps[1:]

        def logical(env: list[Any]) -> Any:
            try:
                result = first_fn(env)
            except CelError:
                result = _ERROR
            if result is decided and first_quiet:
                return decided
            for function, quiet in rest:
                try:
                    value = function(env)
                except CelError:
                    value = _ERROR
                result = combine(result, value)
                if result is decided and quiet:
                    return decided
            return _value(result)

        return Code(logical, raises)

    def _conditionalor(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        return self.logical(node, scope, is_and=False)

    def _conditionaland(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        return self.logical(node, scope, is_and=True)

    def _unary(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        operator_node, operand_node = _children(node)
        operand = self.compile(operand_node, scope)
        get = operand.fn
        if operator_node.data == "unary_not":

            def negate(env: list[Any]) -> Any:
                value = get(env)
                if value is True:
                    return False
                if value is False:
                    return True
                raise CelError("no matching overload for `!`")

            return Code(negate, operand.raises)

        def minus(env: list[Any]) -> Any:
            return _neg(get(env))

        return Code(minus, operand.raises | R4)  # -duration can overflow timedelta

    # -- operators with two operands

    def binary(
        self, left: Code, right: Code, apply: Callable[[Any, Any], Any], own: int = 0
    ) -> Code:
        lf, rf = left.fn, right.fn
        if right.raises:

            def both(env: list[Any]) -> Any:
                try:
                    first = lf(env)
                except CelError:
                    rf(env)  # celpy still evaluates it, and may raise from it
                    raise
                return apply(first, rf(env))

            return Code(both, left.raises | right.raises | own)

        def quick(env: list[Any]) -> Any:
            return apply(lf(env), rf(env))

        return Code(quick, left.raises | own)

    def _relation(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        operator_node, right_node = _children(node)
        (left_node,) = _children(operator_node)
        kind = operator_node.data
        left = self.compile(left_node, scope)
        right = self.compile(right_node, scope)
        if kind == "relation_in":
            return self.membership(left, right)
        python_op, cel_op = (_EQUALITY | _ORDER)[kind]
        fast_types = _FAST_SCALARS | {type(None)} if kind in _EQUALITY else _FAST_SCALARS
        if right.constant and type(right.value) in fast_types and not left.constant:
            constant, constant_type, get = right.value, type(right.value), left.fn

            def against_constant(env: list[Any]) -> Any:
                value = get(env)
                if type(value) is constant_type:
                    return python_op(value, constant)
                return _slow_relation(cel_op, value, constant)

            return Code(against_constant, left.raises)

        def compare(first: Any, second: Any) -> Any:
            kind_of = type(first)
            if kind_of is type(second) and kind_of in fast_types:
                return python_op(first, second)
            return _slow_relation(cel_op, first, second)

        return self.binary(left, right, compare)

    def membership(self, item: Code, container: Code) -> Code:
        if container.constant and type(container.value) is list and not item.constant:
            values = container.value
            if all(type(v) is str for v in values):
                members = frozenset(values)
                get = item.fn

                def in_strings(env: list[Any]) -> Any:
                    value = get(env)
                    if type(value) in _STRS:
                        return value in members
                    return _slow_relation(operator_in, value, values)

                return Code(in_strings, item.raises)
        return self.binary(item, container, _in)

    def arithmetic(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        operator_node, right_node = _children(node)
        (left_node,) = _children(operator_node)
        apply, own = _ARITHMETIC[operator_node.data]
        return self.binary(self.compile(left_node, scope), self.compile(right_node, scope),
                           apply, own)  # fmt: skip

    _addition = arithmetic
    _multiplication = arithmetic

    def _member_index(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        target, key = _children(node)
        return self.binary(self.compile(target, scope), self.compile(key, scope), _index)

    # -- lists

    def _list_lit(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        children = _children(node)
        items = [self.compile(item, scope) for item in _args(children[0])] if children else []
        return self.evaluated_all(items, list, shape="list")

    def evaluated_all(
        self, items: list[Code], build: Callable[[list[Any]], Any], shape: str = ""
    ) -> Code:
        """Evaluate every item in order; an error value fails the whole after the items
        that may still raise were evaluated (celpy evaluates them all)."""
        functions = [item.fn for item in items]
        raises = 0
        for item in items:
            raises |= item.raises
        quiet_rest = [not any(i.raises for i in items[n + 1 :]) for n in range(len(items))]
        steps = list(zip(functions, quiet_rest, strict=True))

        def evaluate(env: list[Any]) -> Any:
            values = []
            failed = False
            for function, quiet in steps:
                try:
                    values.append(function(env))
                except CelError:
                    failed = True
                    if quiet:
                        break
            if failed:
                raise CelError("an argument failed")
            return build(values)

        return Code(evaluate, raises, shape=shape)

    # -- calls

    def _ident_arg(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        children = _children(node)
        name = str(children[0])
        args = [self.compile(a, scope) for a in (_args(children[1]) if len(children) > 1 else [])]
        if name in ("has", "dyn"):
            if len(args) != 1:
                raise UnsupportedError(f"`{name}` with {len(args)} arguments")
            (arg,) = args
            if name == "dyn":
                return arg
            get = arg.fn

            def has(env: list[Any]) -> Any:
                try:
                    get(env)
                except CelError:
                    return False
                return True

            return Code(has, arg.raises)
        return self.call(name, args)

    def _member_dot_arg(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        children = node.children
        target, name = children[0], str(children[1])
        arg_nodes = _args(children[2]) if len(children) > 2 else []
        if name in _CELPY_MACROS:
            return self.macro(name, target, arg_nodes, scope)
        receiver = self.compile(target, scope)
        return self.call(name, [receiver, *(self.compile(a, scope) for a in arg_nodes)])

    def call(self, name: str, args: list[Code]) -> Code:
        function = self.fast_function(name, args)
        own = 0 if name in _QUIET_CALLS and len(args) == _QUIET_CALLS[name] else R4
        if function is None:
            cel_function = self.functions.get(name)
            if cel_function is None:
                raise UnsupportedError(f"unknown function `{name}`")

            def function(*values: Any) -> Any:
                return _call_cel(cel_function, values, _FUNCTION_CATCH)

        if len(args) == 1:
            (only,) = args
            get, apply1 = only.fn, function

            def one(env: list[Any]) -> Any:
                return apply1(get(env))

            return Code(one, only.raises | own)
        if len(args) == 2:
            return self.binary(args[0], args[1], function, own)
        apply_n = function
        evaluated = self.evaluated_all(args, lambda values: values)
        get_all = evaluated.fn

        def many(env: list[Any]) -> Any:
            return apply_n(*get_all(env))

        return Code(many, evaluated.raises | own)

    def fast_function(self, name: str, args: list[Code]) -> Callable[..., Any] | None:
        count = len(args)
        if name == "size" and count == 1:
            return _size
        if name == "startsWith" and count == 2:
            return _starts_with
        if name == "endsWith" and count == 2:
            return _ends_with
        if name == "contains" and count == 2:
            return _contains
        if name == "matches" and count == 2:
            pattern = args[1]
            if pattern.constant and type(pattern.value) in _STRS:
                return self.compiled_pattern(pattern.value)
            return _matches
        if name in _TIME_METHODS:
            return _time_method(name)
        if _LIBRARY_ARITY.get(name) == count:
            return self.library.function(name)
        return None

    def compiled_pattern(self, pattern: str) -> Callable[..., Any]:
        options = re2.Options()
        options.log_errors = False
        try:
            regex = re2.compile(pattern, options)
        except re2.error:
            return _matches
        search = regex.search

        def matches(value: Any, _pattern: Any) -> Any:
            if type(value) in _STRS:
                return search(value) is not None  # re2.search(p, t) is compile(p).search(t)
            return _matches(value, pattern)

        return matches

    # -- macros

    def macro(self, name: str, target: Any, arg_nodes: list[Any], scope: Mapping[str, int]) -> Code:
        if name not in _MACROS:
            raise UnsupportedError(f"the `{name}` macro")
        if len(arg_nodes) != 2:
            raise UnsupportedError(f"`{name}` with {len(arg_nodes)} arguments")
        variable = _single_ident(arg_nodes[0])
        if variable is None:
            raise UnsupportedError(f"`{name}` without a variable name")
        receiver = self.compile(target, scope)
        slot = _FIRST_MACRO_SLOT + self.slots
        self.slots += 1
        predicate = self.compile(arg_nodes[1], {**scope, variable: slot})
        get, test = receiver.fn, predicate.fn
        iterable = receiver.shape in ("list", "map")
        raises = receiver.raises | (0 if iterable else R4)
        if name in ("all", "exists"):
            combine = _and if name == "all" else _or
            decided = name == "exists"
            stops = not predicate.raises & R4

            def fold(env: list[Any]) -> Any:
                result: Any = not decided
                for item in _iterate(get(env)):
                    env[slot] = item
                    try:
                        value = test(env)
                    except (CelError, RaisedError):
                        value = _ERROR
                    result = combine(result, value)
                    if result is decided and stops:
                        return decided
                return _value(result)

            return Code(fold, raises | (predicate.raises & R4))
        raises |= R3 | predicate.raises

        def each(env: list[Any]) -> Any:
            for item in _iterate(get(env)):
                env[slot] = item
                try:
                    yield item, test(env)
                except CelError:
                    raise RaisedError("predicate failed") from None

        if name == "exists_one":

            def exists_one(env: list[Any]) -> Any:
                return sum(1 for _, value in each(env) if truthy(value)) == 1

            return Code(exists_one, raises)
        if name == "map":

            def map_(env: list[Any]) -> Any:
                return [value for _, value in each(env)]

            return Code(map_, raises, shape="list")

        def filter_(env: list[Any]) -> Any:
            return [item for item, value in each(env) if truthy(value)]

        return Code(filter_, raises, shape="list")


_FOLDING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "guardproxy_cel_folding", default=True
)


@contextlib.contextmanager
def unfolded() -> Iterator[None]:
    """Inside this block constant parts are compiled into closures like the rest
    (literals excepted) instead of being evaluated by celpy at compile time: the
    differential test compares the closures on constants too."""
    token = _FOLDING.set(False)
    try:
        yield
    finally:
        _FOLDING.reset(token)


def compile_tree(
    tree: lark.Tree[Any],
    *,
    activation: Activation,
    functions: Mapping[str, Callable[..., Any]],
    plain_functions: Mapping[str, Callable[..., Any]],
    params_cel: Any = None,
    runtime_params: bool = True,
    shapes: Mapping[tuple[str, ...], str] | None = None,
    models: Mapping[tuple[str, ...], type[BaseModel]] | None = None,
    roots: frozenset[str] = frozenset(),
) -> Compiled:
    """Compile a parsed (and checked) expression, or raise :class:`UnsupportedError`.

    ``activation`` is celpy's (with ``functions``) for constants; ``params_cel`` the
    params when they are known at load (``runtime_params`` false), else they are read
    from the environment; ``shapes`` names the input paths that are surely lists or maps,
    ``models`` the model an input path holds when the caller passes it in place (see
    ``_readers``); ``roots`` are the roots the static analysis found it reads (the
    caller fills those).
    """
    if _depth(tree) > MAX_DEPTH:
        raise UnsupportedError("the expression is nested too deeply")
    compiler = _Compiler(
        activation=activation,
        params_cel=params_cel,
        runtime_params=runtime_params,
        library=_Library(functions, plain_functions),
        shapes=shapes or {},
        models=models or {},
    )
    try:
        code = compiler.compile(tree, {})
    except RecursionError:
        raise UnsupportedError("the expression is nested too deeply") from None
    return Compiled(code.fn, compiler.slots, roots)

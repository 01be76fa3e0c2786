"""The operators and functions of compiled CEL (see :mod:`guardproxy.policy.compiler`):
member access, logical operators, relations, arithmetic, indexing, the built-in and
time methods and guardproxy's library functions, each with its fast path for plain
values and celpy's implementation as the slow path.
"""

from __future__ import annotations

import datetime
import operator
import typing
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any

from celpy import celtypes
from celpy.evaluation import (
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

from guardproxy.policy._cel_values import (
    ADDITION_CATCH,
    ERROR_MARKER,
    FUNCTION_CATCH,
    INDEX_CATCH,
    INT64_MAX,
    INT64_MIN,
    MULTIPLICATION_CATCH,
    R4,
    RELATION_CATCH,
    STR_TYPES,
    UNARY_CATCH,
    CelError,
    PyStr,
    call_cel,
    from_cel,
    to_cel,
)

# ---------------------------------------------------------------------------
# Operators and functions.


def cel_member(value: Any, name: str) -> Any:
    """``value.name``: celpy's ``member_dot`` for what is not a plain ``dict``."""
    if type(value) is dict:
        try:
            return value[name]
        except KeyError:
            raise CelError(f"no such member in mapping: {name!r}") from None
    if isinstance(value, BaseModel):
        reader = model_readers(type(value)).get(name)
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


def model_readers(model: type[BaseModel]) -> dict[str, Callable[[Any], Any]]:
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


def cel_iterate(value: Any) -> Iterable[Any]:
    """What celpy's macros iterate over ``value``: a list's items, a map's keys, a
    string's characters (plain ``str``), and a ``TypeError`` for anything else."""
    kind = type(value)
    if kind is list or kind is dict:
        return value  # type: ignore[no-any-return]
    return [from_cel(item) for item in to_cel(value)]


# ---------------------------------------------------------------------------
# Operators.


def cel_and(left: Any, right: Any) -> Any:
    """celpy's ``logical_and`` over domain values (``ERROR_MARKER`` for an error value); a
    non-bool operand can be the result (``1 && true`` is ``1`` in celpy)."""
    if left is True or left is False:
        if right is True or right is False:
            return left and right
        return right if left else False
    if right is True:
        return left
    if right is False:
        return False
    return ERROR_MARKER  # TypeError in celpy, an error value


def cel_or(left: Any, right: Any) -> Any:
    """celpy's ``logical_or`` over domain values."""
    if left is True or left is False:
        if right is True or right is False:
            return left or right
        return True if left else right
    if right is True:
        return True
    if right is False:
        return left
    return ERROR_MARKER


def cel_value(result: Any) -> Any:
    if result is ERROR_MARKER:
        raise CelError("no matching overload for a logical operator, or an operand failed")
    return result


EQUALITY = {"relation_eq": (operator.eq, bool_eq), "relation_ne": (operator.ne, bool_ne)}
ORDER = {
    "relation_lt": (operator.lt, bool_lt),
    "relation_le": (operator.le, bool_le),
    "relation_gt": (operator.gt, bool_gt),
    "relation_ge": (operator.ge, bool_ge),
}


def slow_relation(cel_function: Callable[..., Any], left: Any, right: Any) -> Any:
    return call_cel(cel_function, (left, right), RELATION_CATCH)


def cel_in(item: Any, container: Any) -> Any:
    kind = type(container)
    if type(item) in STR_TYPES:  # celpy compares a str (a PyStr too) with str equality
        if kind is list:
            try:
                if item in container:
                    return True
            except TypeError:  # a celtypes item (IntType, ListType...) refuses str equality
                return slow_relation(operator_in, item, container)
            for element in container:
                if type(element) is not str:
                    return slow_relation(operator_in, item, container)
            return False
        if kind is dict:  # keys are strings: JSON objects and constants only
            return item in container
    return slow_relation(operator_in, item, container)


def _add(left: Any, right: Any) -> Any:
    kind = type(left)
    if kind is int and type(right) is int:
        result = left + right
        if INT64_MIN <= result <= INT64_MAX:
            return result
        raise CelError("return error for overflow")
    if kind in STR_TYPES and type(right) in STR_TYPES:
        return PyStr(str.__add__(left, right))  # celpy: StringType + StringType is a str
    return call_cel(operator.add, (left, right), ADDITION_CATCH)


def _sub(left: Any, right: Any) -> Any:
    if type(left) is int and type(right) is int:
        result = left - right
        if INT64_MIN <= result <= INT64_MAX:
            return result
        raise CelError("return error for overflow")
    return call_cel(operator.sub, (left, right), ADDITION_CATCH)


def _mul(left: Any, right: Any) -> Any:
    if type(left) is int and type(right) is int:
        result = left * right
        if INT64_MIN <= result <= INT64_MAX:
            return result
        raise CelError("return error for overflow")
    return call_cel(operator.mul, (left, right), MULTIPLICATION_CATCH)


def _div(left: Any, right: Any) -> Any:
    return call_cel(operator.truediv, (left, right), MULTIPLICATION_CATCH)


def _mod(left: Any, right: Any) -> Any:
    return call_cel(operator.mod, (left, right), MULTIPLICATION_CATCH)


ARITHMETIC: dict[str, tuple[Callable[[Any, Any], Any], int]] = {
    "addition_add": (_add, 0),
    "addition_sub": (_sub, 0),
    "multiplication_mul": (_mul, R4),  # "a" * 2**62 runs out of memory in celpy too
    "multiplication_div": (_div, 0),
    "multiplication_mod": (_mod, 0),
}


def cel_neg(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        if value == INT64_MIN:
            raise CelError("return error for overflow")
        return -value
    if kind is float:
        return -value
    return call_cel(operator.neg, (value,), UNARY_CATCH)


def cel_index(container: Any, key: Any) -> Any:
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
    return call_cel(operator.getitem, (container, key), INDEX_CATCH)


# ---------------------------------------------------------------------------
# Functions and methods (receiver first), with fast paths for the common types.


def cel_size(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is list or kind is dict:
        return len(value)
    if value is None:
        return 0  # celpy: size(null) is 0
    return call_cel(base_functions["size"], (value,), FUNCTION_CATCH)


def cel_starts_with(value: Any, prefix: Any) -> Any:
    if type(value) in STR_TYPES and type(prefix) in STR_TYPES:
        return value.startswith(prefix)
    return call_cel(base_functions["startsWith"], (value, prefix), FUNCTION_CATCH)


def cel_ends_with(value: Any, suffix: Any) -> Any:
    if type(value) in STR_TYPES and type(suffix) in STR_TYPES:
        return value.endswith(suffix)
    return call_cel(base_functions["endsWith"], (value, suffix), FUNCTION_CATCH)


def cel_contains(value: Any, part: Any) -> Any:
    # only StringType has .contains(): a plain str (PyStr) is an error in celpy
    if type(value) is str and type(part) in STR_TYPES:
        return part in value
    return call_cel(base_functions["contains"], (value, part), FUNCTION_CATCH)


def cel_matches(value: Any, pattern: Any) -> Any:
    return call_cel(function_matches, (value, pattern), FUNCTION_CATCH)


TIME_METHODS: dict[str, Callable[..., Any]] = {
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


def cel_time_method(name: str) -> Callable[..., Any]:
    function, field_of = TIME_METHODS[name], _UTC_FIELDS[name]

    def call(value: Any, *args: Any) -> Any:
        if not args and type(value) is celtypes.TimestampType:
            try:  # the wall time less its offset is the time in UTC, as plain datetimes
                wall = datetime.datetime(value.year, value.month, value.day, value.hour,
                                         value.minute, value.second, value.microsecond)  # fmt: skip
                offset = value.utcoffset()
                return field_of(wall if offset is None else wall - offset)
            except Exception:  # out of range: celpy, below, says what happens
                pass
        return call_cel(function, (value, *args), FUNCTION_CATCH)

    return call


class Library:
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
                return call_cel(cel_function, (value, pattern), FUNCTION_CATCH)

            return glob
        if name in ("globAny", "join"):

            def over_list(values: Any, text: Any) -> Any:
                if type(values) is list and type(text) is str:
                    try:
                        return plain(values, text)
                    except TypeError:  # an item that is not a string, as in celpy
                        raise CelError("no such overload") from None
                return call_cel(cel_function, (values, text), FUNCTION_CATCH)

            return over_list
        if name in ("lowerAscii", "upperAscii"):

            def case(value: Any) -> Any:
                if type(value) is str:
                    return plain(value)
                return call_cel(cel_function, (value,), FUNCTION_CATCH)

            return case
        return None


LIBRARY_ARITY = {"glob": 2, "globAny": 2, "join": 2, "lowerAscii": 1, "upperAscii": 1}
QUIET_CALLS = {"size": 1, "startsWith": 2, "endsWith": 2, "contains": 2, "matches": 2,
                **dict.fromkeys(TIME_METHODS, 1), **LIBRARY_ARITY}  # fmt: skip
"""Functions (and their argument counts) that fail only with error values; a time
method with a time zone argument can raise (an unknown zone), so can conversions."""

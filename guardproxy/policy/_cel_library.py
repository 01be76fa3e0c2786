"""The function library of guardproxy's CEL (see :mod:`guardproxy.policy.cel`): the pure
helpers cel-python lacks (``glob``, ``globAny``, ``join``, ``lowerAscii``, ``upperAscii``)
in their celpy form for the interpreter and their plain form for compiled expressions,
and the names of CEL's own functions, methods, macros and types the checker knows.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from celpy import celtypes

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

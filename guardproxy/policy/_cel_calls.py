"""Function calls and macros of the CEL compiler (see :mod:`guardproxy.policy.compiler`):
:class:`Compiler` adds them to the tree walk of :mod:`guardproxy.policy._cel_walk`
(``has()``, the built-in and library functions with their fast paths, ``matches``
with a constant pattern, and the ``all``/``exists``/``exists_one``/``map``/``filter``
macros).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lark
import re2

from guardproxy.policy._cel_operators import (
    LIBRARY_ARITY,
    QUIET_CALLS,
    TIME_METHODS,
    cel_and,
    cel_contains,
    cel_ends_with,
    cel_iterate,
    cel_matches,
    cel_or,
    cel_size,
    cel_starts_with,
    cel_time_method,
    cel_value,
)
from guardproxy.policy._cel_values import (
    ERROR_MARKER,
    FIRST_MACRO_SLOT,
    FUNCTION_CATCH,
    R3,
    R4,
    STR_TYPES,
    CelError,
    Code,
    RaisedError,
    UnsupportedError,
    call_cel,
    truthy,
)
from guardproxy.policy._cel_walk import (
    CELPY_MACROS,
    MACROS,
    Walk,
    node_args,
    node_children,
    single_ident,
)


class Compiler(Walk):
    """The CEL compiler: the tree walk plus calls and macros."""

    # -- calls

    def _ident_arg(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        children = node_children(node)
        name = str(children[0])
        args = [
            self.compile(a, scope) for a in (node_args(children[1]) if len(children) > 1 else [])
        ]
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
        arg_nodes = node_args(children[2]) if len(children) > 2 else []
        if name in CELPY_MACROS:
            return self.macro(name, target, arg_nodes, scope)
        receiver = self.compile(target, scope)
        return self.call(name, [receiver, *(self.compile(a, scope) for a in arg_nodes)])

    def call(self, name: str, args: list[Code]) -> Code:
        function = self.fast_function(name, args)
        own = 0 if name in QUIET_CALLS and len(args) == QUIET_CALLS[name] else R4
        if function is None:
            cel_function = self.functions.get(name)
            if cel_function is None:
                raise UnsupportedError(f"unknown function `{name}`")

            def function(*values: Any) -> Any:
                return call_cel(cel_function, values, FUNCTION_CATCH)

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
            return cel_size
        if name == "startsWith" and count == 2:
            return cel_starts_with
        if name == "endsWith" and count == 2:
            return cel_ends_with
        if name == "contains" and count == 2:
            return cel_contains
        if name == "matches" and count == 2:
            pattern = args[1]
            if pattern.constant and type(pattern.value) in STR_TYPES:
                return self.compiled_pattern(pattern.value)
            return cel_matches
        if name in TIME_METHODS:
            return cel_time_method(name)
        if LIBRARY_ARITY.get(name) == count:
            return self.library.function(name)
        return None

    def compiled_pattern(self, pattern: str) -> Callable[..., Any]:
        options = re2.Options()
        options.log_errors = False
        try:
            regex = re2.compile(pattern, options)
        except re2.error:
            return cel_matches
        search = regex.search

        def matches(value: Any, _pattern: Any) -> Any:
            if type(value) in STR_TYPES:
                return search(value) is not None  # re2.search(p, t) is compile(p).search(t)
            return cel_matches(value, pattern)

        return matches

    # -- macros

    def macro(self, name: str, target: Any, arg_nodes: list[Any], scope: Mapping[str, int]) -> Code:
        if name not in MACROS:
            raise UnsupportedError(f"the `{name}` macro")
        if len(arg_nodes) != 2:
            raise UnsupportedError(f"`{name}` with {len(arg_nodes)} arguments")
        variable = single_ident(arg_nodes[0])
        if variable is None:
            raise UnsupportedError(f"`{name}` without a variable name")
        receiver = self.compile(target, scope)
        slot = FIRST_MACRO_SLOT + self.slots
        self.slots += 1
        predicate = self.compile(arg_nodes[1], {**scope, variable: slot})
        get, test = receiver.fn, predicate.fn
        iterable = receiver.shape in ("list", "map")
        raises = receiver.raises | (0 if iterable else R4)
        if name in ("all", "exists"):
            combine = cel_and if name == "all" else cel_or
            decided = name == "exists"
            stops = not predicate.raises & R4

            def fold(env: list[Any]) -> Any:
                result: Any = not decided
                for item in cel_iterate(get(env)):
                    env[slot] = item
                    try:
                        value = test(env)
                    except (CelError, RaisedError):
                        value = ERROR_MARKER
                    result = combine(result, value)
                    if result is decided and stops:
                        return decided
                return cel_value(result)

            return Code(fold, raises | (predicate.raises & R4))
        raises |= R3 | predicate.raises

        def each(env: list[Any]) -> Any:
            for item in cel_iterate(get(env)):
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

"""The tree walk of the CEL compiler (see :mod:`guardproxy.policy.compiler`): it turns each
node of a parsed expression into a closure built from the operators and functions of
:mod:`guardproxy.policy._cel_operators`, folds constant parts with celpy and compiles the
macros.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
from collections.abc import Callable, Mapping
from typing import Any

import lark
from celpy.evaluation import (
    Activation,
    CELEvalError,
    Evaluator,
    base_functions,
    operator_in,
)
from pydantic import BaseModel

from guardproxy.policy._cel_operators import (
    ARITHMETIC,
    EQUALITY,
    ORDER,
    Library,
    cel_and,
    cel_in,
    cel_index,
    cel_member,
    cel_neg,
    cel_or,
    cel_value,
    model_readers,
    slow_relation,
)
from guardproxy.policy._cel_values import (
    ERROR_MARKER,
    FAST_SCALARS,
    INPUT_ROOTS,
    R3,
    R4,
    ROOT_SLOTS,
    STR_TYPES,
    CelError,
    Code,
    RaisedError,
    UnsupportedError,
    constant_code,
    escaping_code,
    failing_code,
    from_cel_deep,
    truthy,
)

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
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
CELPY_MACROS = MACROS | {"reduce", "min"}


def node_children(node: lark.Tree[Any]) -> list[Any]:
    return [child for child in node.children if child is not None]


def node_args(node: Any) -> list[Any]:
    if isinstance(node, lark.Tree) and node.data == "exprlist":
        return node_children(node)
    return []


def single_ident(node: Any) -> str | None:
    """The name when ``node`` is nothing but one identifier."""
    while isinstance(node, lark.Tree) and len(node.children) == 1 and node.data != "ident":
        node = node.children[0]
    if isinstance(node, lark.Tree) and node.data == "ident":
        return str(node.children[0])
    return None


def tree_depth(node: Any) -> int:
    deepest = 0
    stack = [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(current, lark.Tree):
            stack.extend((child, level + 1) for child in current.children)
    return deepest


class Walk:
    """The walk over names, literals, operators and conditionals; calls and macros are
    compiled by the subclass :class:`guardproxy.policy._cel_calls.Compiler`."""

    def __init__(
        self,
        *,
        activation: Activation,
        params_cel: Any,
        runtime_params: bool,
        library: Library,
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
        self.folding = FOLDING.get()
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
            result = frozenset().union(*(self.free(a) for a in node_children(node)[1:]))
        elif node.data == "member_dot_arg" and str(node.children[1]) in CELPY_MACROS:
            args = node_args(node.children[2]) if len(node.children) > 2 else []
            names = set(self.free(node.children[0]))
            variable = single_ident(args[0]) if args else None
            for arg in args[1:]:
                names |= self.free(arg) - {variable}
            result = frozenset(names)
        else:
            result = frozenset().union(*(self.free(c) for c in node.children))
        self.free_cache[key] = result
        return result

    def runtime_names(self, scope: Mapping[str, int]) -> frozenset[str]:
        names = set(INPUT_ROOTS) | {"variables"} | set(scope)
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
            return failing_code(RaisedError, str(error.args[0]) if error.args else "", R3)
        except RecursionError:
            raise UnsupportedError("the expression is nested too deeply") from None
        except Exception as error:  # a constant that always escapes celpy's evaluation
            return escaping_code(error)
        if isinstance(value, CELEvalError):
            return failing_code(CelError, str(value.args[0]) if value.args else "", 0)
        return constant_code(from_cel_deep(value))

    # -- the walk

    def compile(self, node: Any, scope: Mapping[str, int]) -> Code:
        while (
            isinstance(node, lark.Tree)
            and node.data in _PASS_THROUGH
            and len(node_children(node)) == 1
        ):
            node = node_children(node)[0]
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
        (child,) = node_children(node)
        return self.compile(child, scope)

    def _paren_expr(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        (child,) = node_children(node)
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
        if name in INPUT_ROOTS:
            slot = ROOT_SLOTS[name]
            return Code(lambda env: env[slot], shape="" if name == "now" else "map")
        raise UnsupportedError(f"`{name}` is read on its own")  # `variables` without a name

    def _member_dot(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        target, name = node.children[0], str(node.children[1])
        if single_ident(target) == "variables" and "variables" not in scope:
            return self.variable(name)
        path = self.root_path(node, scope)
        inner = self.compile(target, scope)
        get = inner.fn
        shape = self.shapes.get(path, "") if path else ""
        model = self.models.get(path[:-1]) if path else None
        reader = model_readers(model).get(name) if model is not None else None
        if model is not None and reader is not None:
            read = reader  # the action read in place: the model this path holds

            def field(env: list[Any]) -> Any:
                value = get(env)
                if type(value) is model:
                    return read(value)
                return cel_member(value, name)

            return Code(field, inner.raises, shape=shape)

        def member(env: list[Any]) -> Any:
            value = get(env)
            if type(value) is dict:
                try:
                    return value[name]
                except KeyError:
                    raise CelError(f"no such member in mapping: {name!r}") from None
            return cel_member(value, name)

        return Code(member, inner.raises, shape=shape)

    def root_path(self, node: Any, scope: Mapping[str, int]) -> tuple[str, ...] | None:
        names: list[str] = []
        while isinstance(node, lark.Tree):
            if node.data == "member_dot":
                names.append(str(node.children[1]))
                node = node.children[0]
            elif node.data in ("member", "primary") and len(node_children(node)) == 1:
                node = node_children(node)[0]
            elif node.data == "ident":
                root = str(node.children[0])
                if root in scope or root not in INPUT_ROOTS:
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
        condition, then, otherwise = (self.compile(c, scope) for c in node_children(node))
        test, first, second = condition.fn, then.fn, otherwise.fn

        def choose(env: list[Any]) -> Any:
            try:
                chosen = test(env)
            except CelError:
                chosen = ERROR_MARKER
            if chosen is True:
                branch = first
            elif chosen is False:
                branch = second
            else:
                # celpy visits the branch Python's truth picks, then fails: `?:` needs a bool
                branch = first if chosen is ERROR_MARKER or truthy(chosen) else second
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
        while isinstance(node, lark.Tree) and node.data == kind and len(node_children(node)) == 2:
            left, right = node_children(node)
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
        combine = cel_and if is_and else cel_or
        decided = not is_and
        steps = list(zip(functions, quiet_rest, strict=True))
        first_fn, first_quiet = steps[0]
        rest = steps[1:]

        def logical(env: list[Any]) -> Any:
            try:
                result = first_fn(env)
            except CelError:
                result = ERROR_MARKER
            if result is decided and first_quiet:
                return decided
            for function, quiet in rest:
                try:
                    value = function(env)
                except CelError:
                    value = ERROR_MARKER
                result = combine(result, value)
                if result is decided and quiet:
                    return decided
            return cel_value(result)

        return Code(logical, raises)

    def _conditionalor(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        return self.logical(node, scope, is_and=False)

    def _conditionaland(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        return self.logical(node, scope, is_and=True)

    def _unary(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        operator_node, operand_node = node_children(node)
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
            return cel_neg(get(env))

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
        operator_node, right_node = node_children(node)
        (left_node,) = node_children(operator_node)
        kind = operator_node.data
        left = self.compile(left_node, scope)
        right = self.compile(right_node, scope)
        if kind == "relation_in":
            return self.membership(left, right)
        python_op, cel_op = (EQUALITY | ORDER)[kind]
        fast_types = FAST_SCALARS | {type(None)} if kind in EQUALITY else FAST_SCALARS
        if right.constant and type(right.value) in fast_types and not left.constant:
            constant, constant_type, get = right.value, type(right.value), left.fn

            def against_constant(env: list[Any]) -> Any:
                value = get(env)
                if type(value) is constant_type:
                    return python_op(value, constant)
                return slow_relation(cel_op, value, constant)

            return Code(against_constant, left.raises)

        def compare(first: Any, second: Any) -> Any:
            kind_of = type(first)
            if kind_of is type(second) and kind_of in fast_types:
                return python_op(first, second)
            return slow_relation(cel_op, first, second)

        return self.binary(left, right, compare)

    def membership(self, item: Code, container: Code) -> Code:
        if container.constant and type(container.value) is list and not item.constant:
            values = container.value
            if all(type(v) is str for v in values):
                members = frozenset(values)
                get = item.fn

                def in_strings(env: list[Any]) -> Any:
                    value = get(env)
                    if type(value) in STR_TYPES:
                        return value in members
                    return slow_relation(operator_in, value, values)

                return Code(in_strings, item.raises)
        return self.binary(item, container, cel_in)

    def arithmetic(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        operator_node, right_node = node_children(node)
        (left_node,) = node_children(operator_node)
        apply, own = ARITHMETIC[operator_node.data]
        return self.binary(self.compile(left_node, scope), self.compile(right_node, scope),
                           apply, own)  # fmt: skip

    _addition = arithmetic
    _multiplication = arithmetic

    def _member_index(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        target, key = node_children(node)
        return self.binary(self.compile(target, scope), self.compile(key, scope), cel_index)

    # -- lists

    def _list_lit(self, node: lark.Tree[Any], scope: Mapping[str, int]) -> Code:
        children = node_children(node)
        items = [self.compile(item, scope) for item in node_args(children[0])] if children else []
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


FOLDING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "guardproxy_cel_folding", default=True
)

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

Where it lives
    This module is the entry point (:func:`compile_tree`); the values, failures and
    conversions are in :mod:`guardproxy.policy._cel_values`, the operators and functions
    in :mod:`guardproxy.policy._cel_operators`, the tree walk in
    :mod:`guardproxy.policy._cel_walk`, calls and macros in
    :mod:`guardproxy.policy._cel_calls`.

Thread safety: the closures hold no mutable state; each evaluation passes its own
environment (a list: the roots, then one slot per macro variable).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import lark
from celpy.evaluation import Activation
from pydantic import BaseModel

from guardproxy.policy._cel_calls import Compiler
from guardproxy.policy._cel_operators import Library
from guardproxy.policy._cel_values import (
    MAX_DEPTH,
    ROOT_SLOTS,
    CelError,
    Compiled,
    PyStr,
    RaisedError,
    Raw,
    UnsupportedError,
    from_cel,
    from_cel_deep,
    to_cel,
)
from guardproxy.policy._cel_walk import (
    FOLDING,
    tree_depth,
)

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


@contextlib.contextmanager
def unfolded() -> Iterator[None]:
    """Inside this block constant parts are compiled into closures like the rest
    (literals excepted) instead of being evaluated by celpy at compile time: the
    differential test compares the closures on constants too."""
    token = FOLDING.set(False)
    try:
        yield
    finally:
        FOLDING.reset(token)


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
    ``_cel_operators.model_readers``); ``roots`` are the roots the static analysis found it
    reads (the caller fills those).
    """
    if tree_depth(tree) > MAX_DEPTH:
        raise UnsupportedError("the expression is nested too deeply")
    compiler = Compiler(
        activation=activation,
        params_cel=params_cel,
        runtime_params=runtime_params,
        library=Library(functions, plain_functions),
        shapes=shapes or {},
        models=models or {},
    )
    try:
        code = compiler.compile(tree, {})
    except RecursionError:
        raise UnsupportedError("the expression is nested too deeply") from None
    return Compiled(code.fn, compiler.slots, roots)

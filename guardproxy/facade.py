"""Package facades that import a name's module when the name is first used.

A package's ``__init__.py`` lists its public names in ``__all__`` and, for type checkers,
imports them under ``TYPE_CHECKING``; at run time :func:`lazy_exports` gives it a module
``__getattr__`` that imports the defining module on first use. So ``from
guardproxy.control import ControlClient`` costs what ``guardproxy.control.client`` costs
(the CLI's commands start quickly), not the control API, the gate and the engine too.

A name missing from the mapping raises AttributeError as usual; a module listed that does
not define the name raises AttributeError naming both (tests/test_layers.py resolves
every name of every facade). Imports nothing of guardproxy (a leaf of the layers).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence

__all__ = ["lazy_exports"]


def lazy_exports(package: str, modules: Mapping[str, Sequence[str]]) -> Callable[[str], object]:
    """The module ``__getattr__`` of ``package``: ``modules`` maps each submodule (relative
    name) to the public names it defines."""
    where = {name: f"{package}.{module}" for module, names in modules.items() for name in names}

    def attribute(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    return attribute

"""Package structure beyond what lint-imports checks (its contracts, in pyproject.toml's
[tool.importlinter], keep the layers and forbid cycles; `.ci/dev test` runs it): every
package has a facade whose names all resolve, facades import lazily, and no module
imports another module's private names."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "guardproxy"
PACKAGES = sorted(init.parent.name for init in SOURCE.glob("*/__init__.py"))


def type_checking_names(init: Path) -> set[str] | None:
    """Names a facade imports under ``if TYPE_CHECKING:`` (None: it has no such block)."""
    found: set[str] | None = None
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            found = found or set()
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom):
                    found.update(alias.asname or alias.name for alias in statement.names)
    return found


def test_the_packages_are_found() -> None:
    assert {"approvals", "audit", "control", "gate", "intercept", "policy", "store"} <= set(
        PACKAGES
    )


@pytest.mark.parametrize("name", PACKAGES)
def test_every_package_has_a_facade_and_its_names_resolve(name: str) -> None:
    package = importlib.import_module(f"guardproxy.{name}")
    exported = getattr(package, "__all__", None)
    assert exported, f"guardproxy/{name}/__init__.py: list the package's public names in __all__"
    assert len(set(exported)) == len(exported), "a name listed twice"
    for public in exported:
        value = getattr(package, public)  # a lazy facade imports the defining module here
        defined_in = getattr(value, "__module__", None)
        if defined_in is not None and defined_in.startswith("guardproxy."):
            assert defined_in.startswith(f"guardproxy.{name}"), (
                f"guardproxy.{name}.{public} comes from {defined_in}: a facade exports its "
                "own package's names"
            )
    declared = type_checking_names(SOURCE / name / "__init__.py")
    if declared is not None:
        assert declared == set(exported), "the TYPE_CHECKING imports and __all__ differ"


def test_a_lazy_facade_costs_only_the_module_used() -> None:
    """What the lazy facades are for: the CLI's client commands (holds, approve, audit
    verify) start without loading the gate, the engine or the proxy."""
    probe = (
        "import sys\n"
        "from guardproxy.control import ControlClient\n"
        "from guardproxy.audit import verify_store\n"
        "from guardproxy.approvals import HoldEvent\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('guardproxy'))))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert "guardproxy.control.client" in loaded and "guardproxy.audit.trail" in loaded
    heavy = {"guardproxy.control.api", "guardproxy.gate.gate", "guardproxy.policy",
             "guardproxy.intercept.proxy", "guardproxy.approvals.notify"}  # fmt: skip
    assert heavy.isdisjoint(loaded), sorted(heavy & set(loaded))


def test_no_module_imports_another_module_s_private_names() -> None:
    """A leading underscore means "this module only": share it under a public name (in a
    module both can import) instead."""
    offenders: list[str] = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                "guardproxy"
            ):
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.endswith("__")
                if private:
                    where = path.relative_to(ROOT)
                    offenders.append(f"{where}:{node.lineno}: {alias.name} from {node.module}")
    assert not offenders, "\n".join(offenders)

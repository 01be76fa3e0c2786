"""Where a bundle's files are (see :mod:`guardproxy.policy.loader`): the policy files of a
bundle directory (``*_test.yaml`` files are tests, not policy), the bundle shipped with
guardproxy, and whether a directory holds guardproxy policy documents at all.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from guardproxy.policy.model import API_VERSION

TEST_SUFFIXES = ("_test.yaml", "_test.yml")


def is_test_file(path: Path) -> bool:
    return path.name.endswith(TEST_SUFFIXES)


def policy_files(root: Path) -> list[Path]:
    """Policy files of a bundle directory, in a stable order."""
    found = [*root.rglob("*.yaml"), *root.rglob("*.yml")]
    return sorted(p for p in found if p.is_file() and not is_test_file(p))


def shipped_bundle() -> Path:
    """The bundle that comes with guardproxy (package data: ``guardproxy/policies``).

    In a source checkout it is the repository's ``policies/`` (the package holds a
    symlink to it); in an installed wheel, a copy inside the package.
    """
    return Path(str(importlib.resources.files("guardproxy").joinpath("policies")))


def is_shipped_bundle(path: Path) -> bool:
    """Whether ``path`` is the shipped bundle (through any symlink or relative path)."""
    try:
        return path.resolve() == shipped_bundle().resolve()
    except OSError:
        return False


def looks_like_bundle(path: Path) -> bool:
    """Whether ``path`` is a directory holding guardproxy policy documents.

    A directory named ``policies`` may belong to something else (IAM, OPA...); one
    whose YAML names ``guardproxy.dev/`` is meant for guardproxy, even if it is
    broken (it is then loaded and its errors reported, never silently replaced).
    """
    if not path.is_dir():
        return False
    for file in policy_files(path):
        try:
            if _API_GROUP in file.read_text(encoding="utf-8", errors="replace"):
                return True
        except OSError:
            return True  # unreadable: load it and say so
    return False


_API_GROUP = API_VERSION.split("/")[0] + "/"

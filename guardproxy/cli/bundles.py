"""Which policy bundle a command uses when none is named.

In order: ``--policies`` (or the config file's ``policies``), ``$GUARDPROXY_POLICIES``,
``./policies`` if it holds guardproxy policies, else the bundle shipped with
guardproxy, so `guardproxy run` works from any directory. Banners say which it is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from guardproxy.policy.loader import is_shipped_bundle, looks_like_bundle, shipped_bundle

POLICIES_ENV = "GUARDPROXY_POLICIES"
LOCAL_POLICIES = Path("policies")


def default_policies() -> Path:
    """The bundle to use when neither --policies nor the config file names one."""
    from_env = os.environ.get(POLICIES_ENV)
    if from_env:
        return Path(from_env)
    if looks_like_bundle(LOCAL_POLICIES):
        return LOCAL_POLICIES
    if LOCAL_POLICIES.is_dir():
        print(
            f"guardproxy: ./{LOCAL_POLICIES} holds no guardproxy policies; using the shipped "
            "bundle (pass --policies DIR to choose one)",
            file=sys.stderr,
        )
    return shipped_bundle()


def describe_policies(path: Path) -> str:
    """The bundle in use, for banners: its path, and whether it is the shipped one."""
    if is_shipped_bundle(path):
        return f"{path} (the shipped bundle; `guardproxy policy init DIR` copies it to edit)"
    return str(path)

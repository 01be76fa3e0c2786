"""A user with real credentials, for brokering tests: their home, their files, their
variables, and ``guardproxy run`` with a ``brokers:`` configuration.

Every real credential here is a distinctive string (``REAL...``) so that a test can
look for it anywhere the agent could: its environment, the files it can read, the
guard's store and logs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .aws_verify import RealKey
from .guard_fixtures import POLICIES, guardproxy_cli, run_client

REAL_DEFAULT = RealKey(
    "AKIAREALDEFAULT00001",
    "REALdefaultSecret0REALdefaultSecret0REAL",
    token="REALsessionTokenFwoGZXIvYXdzEBAaDREALREALREALREALREAL",
)
REAL_PROD = RealKey("AKIAREALPROD00000001", "REALprodSecret000REALprodSecret000REALpr")
REAL_GITHUB = "ghp_REALgithubToken000000000000000000000000"


@dataclass
class User:
    """A user of this machine with real credentials in the usual places."""

    home: Path
    environ: dict[str, str]
    secrets: list[str] = field(default_factory=list)
    """Every real credential string: none may reach the agent."""

    def write(self, relative: str, text: str, mode: int = 0o600) -> Path:
        path = self.home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(mode)
        return path


def make_user(home: Path, extra: Mapping[str, str] | None = None) -> User:
    """A home with AWS profiles (default: a temporary key with its token; prod-admin),
    and an environment without proxy or AWS variables."""
    home.mkdir(parents=True, exist_ok=True)
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "XDG_RUNTIME_DIR")
    environ = {k: v for k, v in os.environ.items() if k in keep}
    environ.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true", AWS_PAGER="",
                   GIT_CONFIG_NOSYSTEM="1")  # fmt: skip
    environ.update(extra or {})
    user = User(home, environ)
    user.write(".aws/credentials", (
        f"[default]\naws_access_key_id = {REAL_DEFAULT.access_key}\n"
        f"aws_secret_access_key = {REAL_DEFAULT.secret}\n"
        f"aws_session_token = {REAL_DEFAULT.token}\n\n"
        f"[prod-admin]\naws_access_key_id = {REAL_PROD.access_key}\n"
        f"aws_secret_access_key = {REAL_PROD.secret}\n"
    ))  # fmt: skip
    user.write(".aws/config", "[default]\nregion = us-east-1\n\n[profile prod-admin]\n"
               "region = eu-west-1\n")  # fmt: skip
    user.secrets += [REAL_DEFAULT.secret, str(REAL_DEFAULT.token), REAL_PROD.secret,
                     REAL_DEFAULT.access_key, REAL_PROD.access_key]  # fmt: skip
    return user


def write_config(path: Path, brokers: dict[str, Any], **settings: Any) -> Path:
    path.write_text(yaml.safe_dump({"brokers": brokers, **settings}), encoding="utf-8")
    return path


def brokered_run(
    user: User,
    data_dir: Path,
    config: Path,
    command: Sequence[str],
    *options: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """``guardproxy run --config CONFIG -- COMMAND`` as ``user`` (bounded)."""
    argv = [*guardproxy_cli(), "run", "--data-dir", str(data_dir), "--policies", str(POLICIES),
            "--config", str(config), "--hold-window", "2", *options, "--", *command]  # fmt: skip
    return run_client(argv, {**user.environ, **(env or {})}, timeout=timeout)


def leaked(text: str, user: User) -> list[str]:
    """The real credentials of ``user`` that appear in ``text``."""
    return [s for s in user.secrets if s in text]


__all__ = [
    "REAL_DEFAULT",
    "REAL_GITHUB",
    "REAL_PROD",
    "User",
    "brokered_run",
    "leaked",
    "make_user",
    "write_config",
]

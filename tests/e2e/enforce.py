"""Running commands under ``guardproxy run --enforce`` in end-to-end tests.

Tests run as root on CI. Root passes the sandbox's checks either way, so the rootless
path is also run as an unprivileged user (:func:`as_unprivileged`): a throwaway uid
whose view of the filesystem is the same except that the directories the test needs
(this virtualenv's Python, the repository, the test's temporary directory) are
reachable, in a private mount namespace so nothing on the machine changes.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from guardproxy.sandbox import EnforceUnavailable, preflight

from .guard_fixtures import CLIENT_TIMEOUT, POLICIES, REPO_ROOT, guardproxy_cli

UNPRIVILEGED_UID = 64_123
"""A uid no account uses: the test's unprivileged user."""


def require_enforce() -> None:
    """Skip unless bubblewrap can run here (CI installs it: a skip there is a failure)."""
    try:
        preflight()
    except EnforceUnavailable as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(error))


def enforced_command(
    data_dir: Path,
    command: Sequence[str],
    *options: str,
    hold_window: float = 1.0,
    mode: str = "rootless",
) -> list[str]:
    """``mode``: rootless is forced (as root, run --enforce picks root mode)."""
    return [
        *guardproxy_cli(), "run", "--enforce", "--enforce-mode", mode, "--data-dir",
        str(data_dir), "--policies", str(POLICIES), "--hold-window", str(hold_window),
        *options, "--", *command,
    ]  # fmt: skip


def run_enforced(
    data_dir: Path,
    command: Sequence[str],
    env: Mapping[str, str],
    *options: str,
    hold_window: float = 1.0,
    timeout: float = CLIENT_TIMEOUT,
    user: int | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``guardproxy run --enforce -- command`` to completion (bounded, no stdin)."""
    argv = enforced_command(data_dir, command, *options, hold_window=hold_window)
    clean = {k: v for k, v in env.items() if not k.startswith("GUARDPROXY_")}
    if user is not None:
        argv = as_unprivileged(argv, user, reachable=[data_dir.parent])
    return subprocess.run(
        argv, env=clean, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def _hidden_ancestor(path: Path, uid: int) -> Path | None:
    """The highest directory above ``path`` that ``uid`` (not its owner) cannot enter."""
    found = None
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if parent.stat().st_uid != uid and not mode & 0o001:
            found = parent
            break
    return found


def as_unprivileged(argv: list[str], uid: int, *, reachable: Sequence[Path]) -> list[str]:
    """``argv`` as ``uid`` (no capabilities), with ``reachable`` and what this Python
    needs made enterable: each directory above them that others cannot enter (``/root``
    for a pyenv Python) is replaced, in a private mount namespace, by a tmpfs holding
    just those paths."""
    if os.geteuid() != 0:
        pytest.skip("running as another user needs root")
    needed = [Path(sys.base_prefix).resolve(), REPO_ROOT, Path(sys.prefix).resolve(),
              *[p.resolve() for p in reachable]]  # fmt: skip
    script = ["set -e"]
    script += [f"chown -R {uid}:{uid} {shlex.quote(str(path))}" for path in reachable]
    script.append('stage="$(mktemp -d)"')
    staged = 0
    for hidden in sorted({h for p in needed if (h := _hidden_ancestor(p, uid)) is not None}):
        inside = [p for p in needed if p.is_relative_to(hidden)]
        first = staged
        for path in inside:
            script.append(f'mkdir "$stage/{staged}" && mount --rbind {path} "$stage/{staged}"')
            staged += 1
        script.append(f"mount -t tmpfs -o mode=0755 tmpfs {hidden}")
        for index, path in enumerate(inside, start=first):
            script.append(f'mkdir -p {path} && mount --move "$stage/{index}" {path}')
    script.append('rmdir "$stage"/* "$stage" 2>/dev/null || true')  # never rm -r: mounts
    quoted = " ".join(shlex.quote(a) for a in argv)
    script.append(
        f"exec setpriv --reuid={uid} --regid={uid} --clear-groups "
        f"--inh-caps=-all --bounding-set=-all env HOME={reachable[0]} USER=agent LOGNAME=agent "
        f"{quoted}"
    )
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(script)]


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path

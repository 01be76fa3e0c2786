"""Root mode: who the guard and the agent run as, and what each must be able to reach.

The guard runs as a dedicated system user (``guardproxy`` unless ``--guard-user``
names another; created when missing) and owns its data directory (0700): the agent,
another user or root without capabilities, can neither read the control token, the
CA key or the store, nor signal the guard. The agent runs as the user who ran
``sudo`` (``SUDO_UID``), else as root in a user namespace of its own, without any
capability.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from guardproxy.sandbox.preflight import SBIN, EnforceUnavailable

DEFAULT_GUARD_USER = "guardproxy"
ROOT_DATA_DIR = Path("/var/lib/guardproxy")
"""Root mode's default data directory: the guard user can reach it (root's home it cannot)."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    groups: list[int] = field(default_factory=list)
    home: str = ""


def guard_account(name: str) -> Account:
    """The guard's user, created (a system user with its own group, no login, no
    home) when it does not exist."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _create_system_user(name)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise EnforceUnavailable(
                f"--enforce (root mode): the user {name} could not be created; create it "
                f"(useradd --system {name}) or name another with --guard-user"
            ) from None
    if entry.pw_uid == 0:
        raise EnforceUnavailable(
            f"--enforce (root mode): the guard user {name} is root; name an unprivileged "
            "user with --guard-user"
        )
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, [entry.pw_gid], entry.pw_dir)


def _create_system_user(name: str) -> None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    useradd = shutil.which("useradd", path=path)
    if useradd is None:
        raise EnforceUnavailable(
            f"--enforce (root mode) runs the guard as the user {name}, which does not exist, "
            f"and useradd is not installed: create the user, or name one with --guard-user"
        )
    nologin = shutil.which("nologin", path=path) or "/bin/false"
    done = subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", nologin, "--comment", "guardproxy guard", name],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode not in (0, 9):  # 9: it exists (another run created it meanwhile)
        reason = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise EnforceUnavailable(
            f"--enforce (root mode): cannot create the guard user {name} ({reason}); create "
            "it, or name another with --guard-user"
        )


def agent_account() -> Account:
    """The agent's user: the one who ran sudo, else root (without capabilities)."""
    uid_text = os.environ.get("SUDO_UID", "")
    if uid_text.isdigit() and int(uid_text) != 0:
        try:
            entry = pwd.getpwuid(int(uid_text))
        except KeyError:
            entry = None
        if entry is not None:
            groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
            return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)
    return Account("root", 0, 0, [0], pwd.getpwuid(0).pw_dir)


def blocking_directory(path: Path, account: Account) -> Path | None:
    """The first directory on the way to ``path`` that ``account`` cannot enter, or
    ``path`` itself if it cannot read it; None if it can reach it."""
    resolved = path.resolve()
    for directory in [*reversed(resolved.parents), resolved]:
        try:
            info = directory.stat()
        except OSError:
            return None  # created later, by whoever may
        wanted = (stat.S_IXOTH, stat.S_IXUSR, stat.S_IXGRP)
        if directory == resolved and not stat.S_ISDIR(info.st_mode):
            wanted = (stat.S_IROTH, stat.S_IRUSR, stat.S_IRGRP)
        other, owner, group = wanted
        if info.st_uid == account.uid:
            allowed = bool(info.st_mode & owner)
        elif info.st_gid in account.groups:
            allowed = bool(info.st_mode & group)
        else:
            allowed = bool(info.st_mode & other)
        if not allowed:
            return directory
    return None


def check_reachable(account: Account, what: dict[str, Path], fix: str) -> None:
    """EnforceUnavailable naming the first of ``what`` that ``account`` cannot reach."""
    for label, path in what.items():
        blocked = blocking_directory(path, account)
        if blocked is not None:
            mode = stat.S_IMODE(blocked.stat().st_mode)
            raise EnforceUnavailable(
                f"--enforce (root mode): the user {account.name} cannot reach {label} {path} "
                f"({blocked} is mode {mode:04o}, owner {_owner(blocked)}); {fix}"
            )


def _owner(path: Path) -> str:
    info = path.stat()
    try:
        return f"{pwd.getpwuid(info.st_uid).pw_name}:{grp.getgrgid(info.st_gid).gr_name}"
    except KeyError:
        return f"{info.st_uid}:{info.st_gid}"


def python_paths() -> dict[str, Path]:
    """What a user needs to reach to run guardproxy with this Python."""
    package = Path(__file__).resolve().parent.parent
    return {
        "this Python": Path(sys.executable).resolve(),
        "its standard library": Path(os.__file__).resolve().parent,
        "guardproxy's code": package,
    }


def hand_over(data_dir: Path, account: Account) -> None:
    """Make ``data_dir`` (created if needed) the guard's: owned by it throughout, 0700."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for directory, subdirectories, files in os.walk(data_dir):
        for name in [*subdirectories, *files]:
            os.chown(os.path.join(directory, name), account.uid, account.gid,
                     follow_symlinks=False)  # fmt: skip
    os.chown(data_dir, account.uid, account.gid)
    os.chmod(data_dir, 0o700)


__all__ = [
    "DEFAULT_GUARD_USER",
    "ROOT_DATA_DIR",
    "Account",
    "agent_account",
    "blocking_directory",
    "check_reachable",
    "guard_account",
    "hand_over",
    "python_paths",
]

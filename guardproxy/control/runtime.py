"""``runtime.json``: how the CLI finds the running guard of a data directory.

``guardproxy holds``, ``approve``, ``policy reload``, ``run --proxy``, ``env`` and the
README's ``kill -HUP`` read the control URL and pid from this one file.  Several
guardproxy processes may share a data directory (a long-running ``serve`` and
standalone ``guardproxy run`` sessions), so the file has an owner: the process that
wrote it, named by its pid and a random instance id.

* A process rewrites or removes the file only while it still holds exactly what that
  process wrote (its pid and instance id): one that exits never deletes another's.
* ``serve`` takes the file over (it is the guard people mean to reach); a standalone
  ``run`` publishes it only when no live guard owns it, so ``holds`` keeps finding
  the long-running ``serve`` (both use the data directory's store, so its listings show
  the run's holds too).
* A file whose pid is gone and whose control port does not answer is stale and may be
  replaced by anyone.

Check-and-write and check-and-remove hold an exclusive ``flock`` on ``runtime.lock``
next to the file, so two processes starting or stopping together never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

log = structlog.get_logger(__name__)

PROBE_SECONDS = 0.5
"""How long a connection to a recorded control port may take to count it as answering."""


def read_runtime(path: Path) -> dict[str, Any] | None:
    """The file's content, or None if it is missing or unreadable."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _control_answers(url: object) -> bool:
    if not isinstance(url, str):
        return False
    split = urlsplit(url)
    if split.hostname is None or split.port is None:
        return False
    try:
        with socket.create_connection((split.hostname, split.port), timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False


def is_live(info: dict[str, Any]) -> bool:
    """Whether the guard a runtime file names still runs: its pid exists, or its control
    port answers (a pid from another PID namespace, e.g. a container)."""
    return _pid_alive(info.get("pid")) or _control_answers(info.get("control"))


class RuntimeFile:
    """This process's claim on a data directory's ``runtime.json``."""

    def __init__(self, path: Path, *, take_over: bool) -> None:
        """``take_over``: replace a live owner's file (``serve``), or leave it (``run``)."""
        self.path = path
        self.take_over = take_over
        self.instance = secrets.token_hex(8)
        self.owned = False
        """Whether the file holds what this process last wrote."""

    def _ours(self, info: dict[str, Any] | None) -> bool:
        return (
            info is not None
            and info.get("pid") == os.getpid()
            and info.get("instance") == self.instance
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.path.with_name("runtime.lock")
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing releases the lock

    def _write(self, info: dict[str, Any]) -> None:
        content = {**info, "pid": os.getpid(), "instance": self.instance}
        temporary = self.path.with_name(f".runtime.{os.getpid()}.{self.instance}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(content, indent=2) + "\n")
        os.replace(temporary, self.path)  # readers see the old file or the new, never half
        self.owned = True

    def publish(self, info: dict[str, Any]) -> bool:
        """Write ``info`` unless another live guard owns the file and this one does not
        take over; returns whether this process owns the file now."""
        with self._locked():
            current = read_runtime(self.path)
            if current is not None and not self._ours(current) and is_live(current):
                if not self.take_over:
                    self.owned = False
                    return False
                log.warning(
                    "runtime.taken_over", path=str(self.path), previous_pid=current.get("pid")
                )
            self._write(info)
            return True

    def update(self, info: dict[str, Any]) -> None:
        """Rewrite the file (e.g. a new bundle digest) if it is still this process's."""
        with self._locked():
            if self._ours(read_runtime(self.path)):
                self._write(info)
            else:
                self.owned = False

    def withdraw(self) -> None:
        """Remove the file if it still holds what this process wrote; leave any other."""
        if not self.owned:  # never written, or found replaced: nothing of ours to remove
            return
        try:
            with self._locked():
                if self._ours(read_runtime(self.path)):
                    self.path.unlink(missing_ok=True)
        except OSError as error:  # the data directory went away: nothing left to remove
            log.warning("runtime.not_removed", path=str(self.path), error=str(error))
        self.owned = False

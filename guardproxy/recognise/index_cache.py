"""Model indexes (AWS, GCP) built once, cached on disk, shared by the process."""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """Where the index is cached.

    ``$GUARDPROXY_CACHE_DIR``, else ``$XDG_CACHE_HOME/guardproxy``, else
    ``~/.cache/guardproxy`` (the XDG convention platformdirs follows on Linux).
    """
    explicit = os.environ.get("GUARDPROXY_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "guardproxy"


def load_or_build[T](
    path: Path,
    read: Callable[[Path], T | None],
    build: Callable[[], T],
    save: Callable[[T, Path], None],
    *,
    rebuild: bool = False,
) -> T:
    """The index from the cache, building (and caching) it when missing or stale.

    A cache directory that cannot be written only costs the build on every start.
    """
    if not rebuild:
        cached = read(path)
        if cached is not None:
            return cached
    index = build()
    with contextlib.suppress(OSError):
        save(index, path)
    return index


def write_payload(path: Path, payload: dict[str, Any]) -> None:
    """Pickle ``payload`` to ``path`` atomically (a concurrent reader sees the old file or
    the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            pickle.dump(payload, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_payload(path: Path) -> dict[str, Any] | None:
    """The dict pickled in ``path``, or None if missing or unreadable.

    The file is trusted like the code is: it lives in the user's own cache directory
    and is only ever written by :func:`write_payload`.
    """
    try:
        with path.open("rb") as handle:
            payload = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError):
        return None
    return payload if isinstance(payload, dict) else None


class Shared[T]:
    """A process-wide value, loaded on first use, once even when threads race for it."""

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._load()
        return self._value

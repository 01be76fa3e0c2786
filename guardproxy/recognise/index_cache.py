"""Model indexes (AWS, GCP) built once, cached on disk, shared by the process."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path


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

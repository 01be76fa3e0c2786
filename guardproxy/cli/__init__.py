"""The ``guardproxy`` command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardproxy.facade import lazy_exports

if TYPE_CHECKING:
    from guardproxy.cli.main import main
else:
    __getattr__ = lazy_exports(
        __name__,
        {
            "main": ["main"],
        },
    )

__all__ = ["main"]

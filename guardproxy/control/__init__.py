"""The control API and its client: holds, approvals and sessions, for humans and `run`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardproxy.facade import lazy_exports

if TYPE_CHECKING:
    from guardproxy.control.api import ControlServer, make_app
    from guardproxy.control.chat import ChatServer
    from guardproxy.control.client import (
        DEFAULT_DATA_DIR,
        ControlClient,
        ControlError,
        approver_token_file,
    )
    from guardproxy.control.handler import ControlContext, ControlHandler
    from guardproxy.control.runtime import RuntimeFile
else:
    __getattr__ = lazy_exports(
        __name__,
        {
            "api": ["ControlServer", "make_app"],
            "chat": ["ChatServer"],
            "client": ["DEFAULT_DATA_DIR", "ControlClient", "ControlError", "approver_token_file"],
            "handler": ["ControlContext", "ControlHandler"],
            "runtime": ["RuntimeFile"],
        },
    )

__all__ = [
    "DEFAULT_DATA_DIR",
    "ChatServer",
    "ControlClient",
    "ControlContext",
    "ControlError",
    "ControlHandler",
    "ControlServer",
    "RuntimeFile",
    "approver_token_file",
    "make_app",
]

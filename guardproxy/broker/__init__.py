"""Credential brokering: the session holds credentials valid only at the guard; the guard
authenticates approved requests upstream with the user's real ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardproxy.facade import lazy_exports

if TYPE_CHECKING:
    from guardproxy.broker.broker import Broker, Grant, LocalAnswer
    from guardproxy.broker.rewrite import AuthError, CredentialError, Rewrite
    from guardproxy.broker.session_keys import SessionKeys, load_or_create_key
    from guardproxy.broker.settings import BrokersConfig
else:
    __getattr__ = lazy_exports(
        __name__,
        {
            "broker": ["Broker", "Grant", "LocalAnswer"],
            "rewrite": ["AuthError", "CredentialError", "Rewrite"],
            "session_keys": ["SessionKeys", "load_or_create_key"],
            "settings": ["BrokersConfig"],
        },
    )

__all__ = [
    "AuthError",
    "Broker",
    "BrokersConfig",
    "CredentialError",
    "Grant",
    "LocalAnswer",
    "Rewrite",
    "SessionKeys",
    "load_or_create_key",
]

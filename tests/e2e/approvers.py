"""Approvers for end-to-end tests: real identities in the guard's store, real tokens."""

from __future__ import annotations

import secrets
from typing import Any

from guardproxy.control.client import ControlClient
from guardproxy.gate.gate import utc_now
from guardproxy.store import Approver, Store, hash_token

ON_CALL_GROUPS = ("senior", "sre-oncall")
"""Every group the shipped policies ask for."""


def add_approver(store: Store, name: str, groups: tuple[str, ...] = ON_CALL_GROUPS) -> str:
    """Store an approver (as `guardproxy approvers add` does) and return their token."""
    token = "gpa_" + secrets.token_urlsafe(16)
    store.add_approver(
        Approver(name=name, groups=groups, token_hash=hash_token(token), created_at=utc_now())
    )
    return token


class OnCall:
    """Two on-call people, alice and bob, in every group the shipped policies name."""

    def __init__(self, store: Store, control_url: str) -> None:
        self.clients: dict[str, ControlClient] = {}
        for name in ("alice", "bob"):
            if store.get_approver(name) is not None:  # a guard restarted on the same store
                store.remove_approver(name)
            self.clients[name] = ControlClient(control_url, add_approver(store, name))

    def approve(self, hold_id: str, reason: str = "approved in a test") -> dict[str, Any]:
        """Approve as alice, then bob if the hold still needs a second person."""
        result = self.clients["alice"].resolve(hold_id, approve=True, reason=reason)
        if result["hold"]["state"] == "pending":
            result = self.clients["bob"].resolve(hold_id, approve=True, reason=reason)
        hold: dict[str, Any] = result["hold"]
        return hold

    def deny(self, hold_id: str, reason: str = "denied in a test") -> dict[str, Any]:
        result = self.clients["alice"].resolve(hold_id, approve=False, reason=reason)
        hold: dict[str, Any] = result["hold"]
        return hold

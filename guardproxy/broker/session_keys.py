"""A session's own credentials: valid only at the guard, derived, never stored.

Every session credential is an HMAC of the session id under the guard's broker key
(``broker-key`` in the data directory, 0600, created once): guards sharing a data
directory agree on them, a restarted guard still knows them, and nothing about them
is kept in the store. A leaked session credential is useless outside the guard (no
provider knows it) and, inside, only as good as the session it names, which must be
the flow's own.

Shapes: an AWS access key id ``GPAK`` + 16 base32 characters (20, like AWS's own) with
a 40-character secret; bearer placeholders ``gpb_<provider>_`` + 32 base32 characters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

KEY_FILE = "broker-key"
AWS_KEY_PREFIX = "GPAK"
PLACEHOLDER_PREFIX = "gpb_"


def load_or_create_key(data_dir: Path) -> bytes:
    """The guard's broker key (32 random bytes, hex in ``broker-key``, mode 0600)."""
    path = data_dir / KEY_FILE
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another guard of this data directory was first
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key.hex() + "\n")
    return key


@dataclass(frozen=True)
class AwsSessionKey:
    """A session profile's access key: what the session's tools sign with."""

    profile: str
    access_key_id: str
    secret_access_key: str


class SessionKeys:
    """Derives the session credentials of any session from the broker key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the broker key is too short")
        self._key = key

    def _mac(self, *parts: str) -> bytes:
        message = "\x00".join(parts).encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def aws(self, session_id: str, profile: str) -> AwsSessionKey:
        key_id = base64.b32encode(self._mac("aws-key-id", session_id, profile)).decode()
        secret = base64.b64encode(self._mac("aws-secret", session_id, profile)).decode()
        return AwsSessionKey(profile, AWS_KEY_PREFIX + key_id[:16], secret[:40])

    def placeholder(self, session_id: str, provider: str, name: str = "") -> str:
        """The bearer token standing for the real one of ``provider`` (``name``: which of
        several, e.g. a kubeconfig user)."""
        mac = base64.b32encode(self._mac("bearer", session_id, provider, name)).decode()
        return f"{PLACEHOLDER_PREFIX}{provider}_{mac[:32].lower()}"


def looks_like_session_credential(text: str) -> bool:
    """Whether ``text`` holds something shaped like a session credential (cheap)."""
    return AWS_KEY_PREFIX in text or PLACEHOLDER_PREFIX in text


__all__ = [
    "AWS_KEY_PREFIX",
    "KEY_FILE",
    "PLACEHOLDER_PREFIX",
    "AwsSessionKey",
    "SessionKeys",
    "load_or_create_key",
    "looks_like_session_credential",
]

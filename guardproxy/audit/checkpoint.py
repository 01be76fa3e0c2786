"""Signed checkpoints of the audit chains, and the key that signs them.

Each writer appends to a chain of its own (guardproxy/store/chain.py); a checkpoint binds
the heads of the chains that moved since the previous one into one hash, chained to the
previous checkpoint, and signs it with an Ed25519 key that is *not* in the database.  So
someone who rewrites the whole database (every record, every chain hash, even the
checkpoints' hashes) cannot make the checkpoints verify: that needs the private key.
``audit verify`` checks them with the public key.

The key is a file, ``audit-key`` in the data directory by default (PKCS#8 PEM, created
0600 on first start; ``audit_key`` in the configuration names another); ``audit-key.pub``
beside it holds the public key in one line, to keep wherever the trail is audited from.
Replicas of a fleet may share one key (copy the file) or each have their own (``audit
verify`` takes several ``--key``).

:class:`Checkpointer` is what ``guardproxy serve`` runs: a checkpoint every few seconds
(skipped when another replica made one meanwhile, or nothing was appended), and one when
it stops, after the last records are written.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from guardproxy.store.base import Checkpoint, Store, StoreError
from guardproxy.store.chain import signed_message

log = structlog.get_logger(__name__)

KEY_FILE = "audit-key"
"""The signing key's file name in the data directory."""
PUBLIC_SUFFIX = ".pub"
PUBLIC_PREFIX = "guardproxy-audit-ed25519"
"""The first word of a public key line: ``guardproxy-audit-ed25519 <base64> <key id>``."""
DEFAULT_INTERVAL = 10.0
"""Seconds between checkpoints (across a fleet: a replica skips its turn when another
replica made one within this time)."""


class AuditKeyError(Exception):
    """A key file that cannot be read or created; the message is one line."""


def key_id(public: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the sha256 of the raw public key: which key signed."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class VerifyKey:
    """A public key that checks checkpoint signatures."""

    public: Ed25519PublicKey
    key_id: str

    @classmethod
    def of(cls, public: Ed25519PublicKey) -> VerifyKey:
        return cls(public, key_id(public))

    def verifies(self, checkpoint: Checkpoint) -> bool:
        """Whether ``checkpoint``'s signature is this key's signature of its hash."""
        try:
            signature = bytes.fromhex(checkpoint.signature)
            self.public.verify(signature, signed_message(checkpoint.hash))
        except (ValueError, InvalidSignature):
            return False
        return True

    def line(self) -> str:
        """The public key as one line of text (what ``audit-key.pub`` holds)."""
        encoded = base64.b64encode(_raw(self.public)).decode("ascii")
        return f"{PUBLIC_PREFIX} {encoded} {self.key_id}"


@dataclass(frozen=True)
class SigningKey:
    """The private key that signs checkpoints (kept outside the database)."""

    private: Ed25519PrivateKey
    verify_key: VerifyKey

    @property
    def key_id(self) -> str:
        return self.verify_key.key_id

    def sign(self, checkpoint_hash: str) -> str:
        """The signature (hex) of a checkpoint's hash."""
        return self.private.sign(signed_message(checkpoint_hash)).hex()


def _signing_key(private: Ed25519PrivateKey) -> SigningKey:
    return SigningKey(private, VerifyKey.of(private.public_key()))


def load_or_create_signing_key(path: Path) -> SigningKey:
    """The key in ``path``, created (0600, with its ``.pub``) if there is none yet."""
    if not path.exists():
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return load_signing_key(path)
        except OSError as error:
            raise AuditKeyError(
                f"cannot create the audit signing key {path}: {error.strerror}"
            ) from error
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
        key = _signing_key(private)
        write_public_key(key.verify_key, path)
        return key
    key = load_signing_key(path)
    if not public_key_path(path).exists():
        write_public_key(key.verify_key, path)
    return key


def public_key_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + PUBLIC_SUFFIX)


def write_public_key(key: VerifyKey, key_path: Path) -> None:
    """``audit-key.pub`` beside the private key (best effort: it can be derived again)."""
    try:
        public_key_path(key_path).write_text(key.line() + "\n", encoding="ascii")
    except OSError as error:
        log.warning("audit.public_key_not_written", path=str(key_path), error=str(error))


def load_signing_key(path: Path) -> SigningKey:
    """The Ed25519 private key in ``path`` (PEM); :class:`AuditKeyError` otherwise."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise AuditKeyError(
            f"cannot read the audit signing key {path}: {error.strerror}"
        ) from error
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise AuditKeyError(
            f"{path} is not an unencrypted PEM private key: {error}; remove it to have "
            "guardproxy create a new one (checkpoints it signed then need its public key)"
        ) from error
    if not isinstance(private, Ed25519PrivateKey):
        raise AuditKeyError(f"{path} is not an Ed25519 key")
    return _signing_key(private)


def load_verify_key(path: Path) -> VerifyKey:
    """A public key from ``path``: a ``guardproxy-audit-ed25519`` line (``audit-key.pub``),
    a PEM public key, or the private key itself."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise AuditKeyError(f"cannot read the key {path}: {error.strerror}") from error
    text = data.decode("ascii", errors="replace").strip()
    if text.startswith(PUBLIC_PREFIX):
        parts = text.split()
        try:
            raw = base64.b64decode(parts[1], validate=True)
            return VerifyKey.of(Ed25519PublicKey.from_public_bytes(raw))
        except (IndexError, ValueError) as error:
            raise AuditKeyError(f"{path}: not a valid {PUBLIC_PREFIX} line") from error
    if b"PRIVATE KEY" in data:
        return load_signing_key(path).verify_key
    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as error:
        raise AuditKeyError(
            f"{path} is not an audit key: expected the {PUBLIC_PREFIX} line of "
            f"{KEY_FILE}{PUBLIC_SUFFIX}, a PEM public key or the private key"
        ) from error
    if not isinstance(public, Ed25519PublicKey):
        raise AuditKeyError(f"{path} is not an Ed25519 key")
    return VerifyKey.of(public)


class Checkpointer:
    """Makes the checkpoints of one replica: every ``interval`` seconds, and at the end."""

    def __init__(
        self,
        store: Store,
        key: SigningKey,
        *,
        clock: Callable[[], datetime],
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._store = store
        self._key = key
        self._clock = clock
        self.interval = interval

    def checkpoint(self, *, force: bool = False) -> Checkpoint | None:
        """A checkpoint of every chain that moved, unless one was made less than
        ``interval`` ago (by any replica) and not ``force``; None if none was made.
        Raises :class:`StoreError`."""
        made = self._store.checkpoint_audit(
            at=self._clock(),
            key_id=self._key.key_id,
            sign=self._key.sign,
            min_interval=timedelta(0) if force else timedelta(seconds=self.interval * 0.9),
        )
        if made is not None:
            log.debug("audit.checkpoint", seq=made.seq, chains=len(made.heads))
        return made

    def final(self) -> None:
        """The checkpoint made when the replica stops (logged, never raised)."""
        try:
            self.checkpoint(force=True)
        except StoreError as error:
            log.warning("audit.checkpoint_failed", error=str(error), final=True)

    async def run(self) -> None:
        """Checkpoint every ``interval`` seconds until cancelled; a failure (a store that
        is away) is logged and the next turn tries again."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.checkpoint)
            except StoreError as error:
                log.warning("audit.checkpoint_failed", error=str(error))

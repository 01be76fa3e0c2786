"""Session credentials: each wrapped agent session gets an id and a secret token.

The token travels in the proxy URL (``http://<id>:<token>@127.0.0.1:<port>``) so every
request the session's tools send is attributed to it. Only a hash is stored.
Requests without a credential belong to an anonymous session per client address.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from guardproxy.context import SessionInfo
from guardproxy.session.agents import agent_from_command
from guardproxy.store.base import (
    InvalidValueError,
    NotFoundError,
    Session,
    Store,
    StoreError,
    hash_token,
)


@dataclass(frozen=True)
class SessionCredential:
    session_id: str
    token: str


class SessionRefused(Exception):  # noqa: N818 - a refusal, not a failure
    """A session cannot be resumed; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, error: str, hint: str = "") -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.hint = hint


def new_session_id() -> str:
    return "s-" + secrets.token_hex(5)


SESSION_TOKEN_PREFIX = "gps_"
"""Session credentials start with it: never with `-`, and recognisable to secret
scanners. Credentials issued before it keep working (only their hash is compared)."""


def new_session_token() -> str:
    return SESSION_TOKEN_PREFIX + secrets.token_urlsafe(24)


def session_info(session: Session) -> SessionInfo:
    return SessionInfo(
        id=session.id,
        name=session.name,
        user=session.user,
        agent=session.agent,
        labels=list(session.labels),
        anonymous=session.anonymous,
    )


CACHE_SECONDS = 5.0
"""How long a checked session credential is trusted before the store is asked again."""


class SessionRegistry:
    """Creates sessions and authenticates their credentials (cached after first use)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, tuple[Session, float]] = {}
        """Session id -> (session, monotonic time it was read from the store)."""
        self._lock = threading.Lock()

    def create(
        self,
        *,
        name: str,
        user: str,
        command: list[str],
        cwd: str,
        labels: list[str],
        now: datetime,
        agent: str = "",
    ) -> tuple[Session, SessionCredential]:
        token = new_session_token()
        session = Session(
            id=new_session_id(),
            name=name,
            user=user,
            agent=agent or agent_from_command(command),
            command=tuple(command),
            cwd=cwd,
            labels=tuple(labels),
            started_at=now,
            token_hash=hash_token(token),
        )
        self._store.create_session(session)
        return session, SessionCredential(session.id, token)

    def resume(self, session_id: str, *, user: str) -> tuple[Session, SessionCredential]:
        """Re-open an ended session of ``user`` with a new credential, so its approvals
        (``guardproxy run --resume``), holds and history apply again.

        Raises :class:`SessionRefused` for an unknown, anonymous, still active session,
        or one another user started; :class:`StoreError` when the store fails.
        """
        session = self._store.get_session(session_id)
        if session is None or session.anonymous:
            raise SessionRefused(
                404, f"no session {session_id} to resume", "start a new one without --resume"
            )
        if session.user != user:
            raise SessionRefused(
                403,
                f"session {session_id} was started by {session.user or 'nobody named'}; "
                f"{user or 'this user'} cannot resume it",
                "start a new session without --resume",
            )
        if session.active:
            raise SessionRefused(
                409,
                f"session {session_id} is still running; only an ended session can be resumed",
                "wait for it to end, or start a new session without --resume",
            )
        token = secrets.token_urlsafe(24)
        try:
            resumed = self._store.resume_session(session_id, hash_token(token))
        except (NotFoundError, InvalidValueError) as error:  # changed since it was read
            raise SessionRefused(409, str(error), "start a new session without --resume") from None
        with self._lock:
            self._cache.pop(session_id, None)
        return resumed, SessionCredential(session_id, token)

    def authenticate(self, session_id: str, token: str) -> Session | None:
        """The live session for this credential, or None (wrong, unknown or ended).

        A session is re-read from the store once its check is CACHE_SECONDS old, so
        one ended through another replica stops working here too; while the store is
        unreachable the last state read stands (StoreError if there is none).
        """
        wanted = hash_token(token)
        read_at = time.monotonic()
        session: Session | None
        with self._lock:
            cached = self._cache.get(session_id)
        if cached is not None and read_at - cached[1] < CACHE_SECONDS:
            session, read_at = cached
        else:
            try:
                session = self._store.get_session(session_id)
            except StoreError:
                if cached is None:
                    raise
                session, read_at = cached
        if session is None or session.token_hash is None or not session.active:
            with self._lock:
                self._cache.pop(session_id, None)
            return None
        if not hmac.compare_digest(session.token_hash, wanted):
            return None
        with self._lock:
            self._cache[session_id] = (session, read_at)
        return session

    def end(self, session_id: str, now: datetime) -> Session:
        with self._lock:
            self._cache.pop(session_id, None)
        return self._store.end_session(session_id, now)


@lru_cache(maxsize=1024)
def anonymous_session(client_ip: str) -> SessionInfo:
    """The session of a client that presented no credential; built once per client
    address (a frozen model, and built on every such request)."""
    return SessionInfo(id=f"anonymous:{client_ip}", name="anonymous", anonymous=True)

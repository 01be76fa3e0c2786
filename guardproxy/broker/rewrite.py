"""What re-authenticating a request changes, and why a request cannot be brokered."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rewrite:
    """The only changes made to an approved request before it goes upstream: its
    authentication. Headers named in ``remove_headers`` are removed (every value), each
    of ``set_headers`` replaces that header's values in place (or is added);
    ``path`` replaces the request target (a presigned URL's auth parameters),
    ``body`` the body (aws-chunked chunk signatures), ``client_certificate`` is the
    (certificate, key) PEM pair to present on the upstream connection."""

    set_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    path: str | None = None
    body: bytes | None = None
    client_certificate: tuple[bytes, bytes] | None = None


class AuthError(Exception):
    """The request carries a session credential that does not authenticate it (or the
    guard cannot re-authenticate it): it is refused, natively, before any decision.

    ``code`` is the provider's own name for the failure where it has one
    (``SignatureDoesNotMatch``); ``message`` is one line for the agent, and never holds
    a credential.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CredentialError(Exception):
    """A real credential could not be obtained (a plugin failed, a token expired and
    cannot be refreshed). One line naming the source, never the credential."""


__all__ = ["AuthError", "CredentialError", "Rewrite"]

"""Where the real credentials come from, and how long each is good for.

Every source is resolved once at start-up (``check``: a source that cannot be resolved
stops the guard with one line naming it) and then serves the request path from a cache:
``needs_io()`` says whether the next ``get`` may block (a refresh, a command, a file),
so the caller can take it off the event loop. A refresh is serialised per source: a
burst of requests runs the command or the refresh once.

Errors name the source, never the credential: a command's failure is reported by its
exit status and the first line of its stderr, which the command controls, so that line
is redacted before it is shown.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from guardproxy.broker.rewrite import CredentialError
from guardproxy.redact import redact_text

REFRESH_MARGIN_SECONDS = 60.0
"""A token expiring sooner than this is refreshed before it is used."""
COMMAND_TIMEOUT_SECONDS = 30.0
COMMAND_TOKEN_SECONDS = 300.0
"""How long a command's token without a stated expiry is reused (gh auth token)."""


def _first_line(text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return redact_text(line[:200])


def run_command(
    argv: list[str], *, what: str, env: Mapping[str, str] | None = None,
    timeout: float = COMMAND_TIMEOUT_SECONDS, stdin: bytes = b"",
) -> bytes:  # fmt: skip
    """``argv``'s standard output; CredentialError (one line) if it fails."""
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, timeout=timeout, check=False,
            env=dict(env) if env is not None else None,
        )  # fmt: skip
    except FileNotFoundError:
        raise CredentialError(f"{what}: {argv[0]} is not installed or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise CredentialError(f"{what}: {argv[0]} did not answer within {timeout:g} s") from None
    except OSError as error:
        raise CredentialError(f"{what}: cannot run {argv[0]}: {error.strerror}") from None
    if done.returncode != 0:
        why = _first_line(done.stderr) or f"exit status {done.returncode}"
        raise CredentialError(f"{what}: {argv[0]} failed: {why}")
    return done.stdout


def parse_time(text: str) -> float:
    """An RFC 3339 / ISO 8601 timestamp (``Z``, offsets, fractions) as epoch seconds;
    a naive one is UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class TokenSource(ABC):
    """A bearer token that may expire."""

    def __init__(self, what: str, clock: Callable[[], float] = time.time) -> None:
        self.what = what
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._expires = 0.0

    def needs_io(self) -> bool:
        return not self._token or self._clock() >= self._expires - REFRESH_MARGIN_SECONDS

    def get(self) -> str:
        if not self.needs_io():
            return self._token
        with self._lock:
            if self.needs_io():
                self._token, self._expires = self._fetch()
                if not self._token:
                    raise CredentialError(f"{self.what}: the token is empty")
        return self._token

    def check(self) -> None:
        self.get()

    @abstractmethod
    def _fetch(self) -> tuple[str, float]:
        """A fresh token and when it expires (epoch seconds)."""


class StaticToken(TokenSource):
    """A token read once (an environment variable of the guard's)."""

    def __init__(self, what: str, value: str) -> None:
        super().__init__(what)
        self._value = value.strip()

    def _fetch(self) -> tuple[str, float]:
        if not self._value:
            raise CredentialError(f"{self.what}: not set")
        return self._value, float("inf")


class FileToken(TokenSource):
    """A token file, read again when it changes (a rotated service-account token)."""

    def __init__(self, what: str, path: Path, clock: Callable[[], float] = time.time) -> None:
        super().__init__(what, clock)
        self._path = path
        self._seen: tuple[float, int] | None = None

    def needs_io(self) -> bool:
        return not self._token or self._clock() >= self._expires

    def _fetch(self) -> tuple[str, float]:
        try:
            stat = self._path.stat()
            if self._token and self._seen == (stat.st_mtime, stat.st_size):
                return self._token, self._clock() + 60.0
            token = self._path.read_text(encoding="utf-8").strip()
        except OSError as error:
            why = f"cannot read {self._path}: {error.strerror}"
            raise CredentialError(f"{self.what}: {why}") from None
        self._seen = (stat.st_mtime, stat.st_size)
        return token, self._clock() + 60.0


class CommandToken(TokenSource):
    """A command's standard output (``gh auth token``), or a field of its JSON output
    with its expiry (``az account get-access-token``)."""

    def __init__(
        self, what: str, argv: list[str], *, json_field: str = "",
        expiry_fields: tuple[str, ...] = (), ttl: float = COMMAND_TOKEN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        super().__init__(what, clock)
        self._argv = argv
        self._json_field = json_field
        self._expiry_fields = expiry_fields
        self._ttl = ttl

    def _fetch(self) -> tuple[str, float]:
        output = run_command(self._argv, what=self.what)
        if not self._json_field:
            return output.decode("utf-8", "replace").strip(), self._clock() + self._ttl
        try:
            document = json.loads(output)
            token = str(document[self._json_field])
        except (ValueError, KeyError, TypeError):
            why = f"{self._argv[0]} printed no {self._json_field}"
            raise CredentialError(f"{self.what}: {why}") from None
        for field in self._expiry_fields:
            value = document.get(field)
            if isinstance(value, int | float):
                return token, float(value)
            if isinstance(value, str) and value:
                try:
                    return token, float(value) if value.isdigit() else parse_time(value)
                except ValueError:
                    continue
        return token, self._clock() + self._ttl


def token_source(spec: str, what: str, *, auto: list[str], auto_command: list[str] | None,
                 environ: Mapping[str, str]) -> TokenSource:  # fmt: skip
    """The source ``spec`` names (``auto``, ``env:NAME``, ``file:PATH``, ``command:CMD``);
    ``auto``: the first of the ``auto`` variables that is set, else ``auto_command``."""
    kind, _, rest = spec.partition(":")
    if kind == "env":
        return StaticToken(f"{what} from ${rest}", environ.get(rest, ""))
    if kind == "file":
        return FileToken(f"{what} from {rest}", Path(rest).expanduser())
    if kind == "command":
        return CommandToken(f"{what} from `{rest}`", shlex.split(rest))
    for name in auto:
        if environ.get(name, "").strip():
            return StaticToken(f"{what} from ${name}", environ[name])
    if auto_command is not None:
        return CommandToken(f"{what} from `{shlex.join(auto_command)}`", auto_command)
    names = ", ".join(f"${n}" for n in auto)
    return StaticToken(f"{what} ({names})", "")


# -- AWS: botocore's own credential chain ------------------------------------------------


class AwsCredentials:
    """A profile's credentials as botocore resolves them (environment, shared files,
    SSO, assume-role, credential_process, container, instance), refreshed by botocore
    when they are temporary."""

    def __init__(self, profile: str) -> None:
        import botocore.session  # noqa: PLC0415 - only guards brokering AWS load it
        from botocore.exceptions import BotoCoreError  # noqa: PLC0415

        self.profile = profile
        self.what = f"AWS profile {profile!r}" if profile else "AWS default credential chain"
        self._error = BotoCoreError
        try:
            session = botocore.session.Session(profile=profile or None)
            credentials = session.get_credentials()
        except BotoCoreError as error:
            raise CredentialError(f"{self.what}: {_first_line(str(error))}") from None
        if credentials is None:
            raise CredentialError(
                f"{self.what}: botocore found no credentials (aws configure, aws sso login, "
                "or name another profile in brokers.aws.profiles)"
            )
        self._credentials: Any = credentials

    def needs_io(self) -> bool:
        refresh_needed = getattr(self._credentials, "refresh_needed", None)
        return bool(refresh_needed()) if refresh_needed is not None else False

    def get(self) -> Any:
        """botocore ``ReadOnlyCredentials`` (key, secret, token), refreshed if due."""
        try:
            frozen = self._credentials.get_frozen_credentials()
        except self._error as error:
            raise CredentialError(f"{self.what}: {_first_line(str(error))}") from None
        except Exception as error:  # botocore refreshers raise their own kinds
            raise CredentialError(f"{self.what}: refresh failed ({type(error).__name__})") from None
        if not frozen.access_key or not frozen.secret_key:
            raise CredentialError(f"{self.what}: incomplete credentials")
        return frozen

    def check(self) -> None:
        self.get()


# -- GCP: google-auth's Application Default Credentials ---------------------------------


class GoogleToken(TokenSource):
    """An access token from google-auth (ADC or a credentials file), refreshed by
    google-auth when it is about to expire."""

    def __init__(self, spec: str, scopes: list[str]) -> None:
        super().__init__("GCP " + ("application default credentials" if spec == "adc"
                                   else f"credentials {spec[5:]}"))  # fmt: skip
        self._spec = spec
        self._scopes = scopes
        self._credentials: Any = None
        self.project = ""

    def _load(self) -> Any:
        import google.auth  # noqa: PLC0415
        from google.auth import exceptions  # noqa: PLC0415

        try:
            if self._spec == "adc":
                credentials, project = google.auth.default(scopes=self._scopes)
            else:
                credentials, project = self._from_file(Path(self._spec[5:]))
        except exceptions.GoogleAuthError as error:
            raise CredentialError(f"{self.what}: {_first_line(str(error))}") from None
        self.project = project or ""
        return credentials

    def _from_file(self, path: Path) -> tuple[Any, str]:
        """A service-account or authorized-user file, each by its own loader (the
        generic loader would accept any credential type the file names)."""
        from google.oauth2 import credentials, service_account  # noqa: PLC0415

        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise CredentialError(f"{self.what}: cannot read {path}: {error}") from None
        kind = info.get("type") if isinstance(info, dict) else None
        if kind == "service_account":
            found: Any = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=self._scopes
            )
            return found, str(info.get("project_id", ""))
        if kind == "authorized_user":
            found = credentials.Credentials.from_authorized_user_info(  # type: ignore[no-untyped-call]
                info, scopes=self._scopes
            )
            return found, str(info.get("quota_project_id", ""))
        raise CredentialError(
            f"{self.what}: type {kind!r} is not supported (service_account or authorized_user)"
        )

    def _fetch(self) -> tuple[str, float]:
        import google.auth.transport.requests  # noqa: PLC0415
        from google.auth import exceptions  # noqa: PLC0415

        if self._credentials is None:
            self._credentials = self._load()
        try:
            self._credentials.refresh(google.auth.transport.requests.Request())
        except exceptions.GoogleAuthError as error:
            why = f"refresh failed: {_first_line(str(error))}"
            raise CredentialError(f"{self.what}: {why}") from None
        expiry = self._credentials.expiry
        expires = expiry.replace(tzinfo=UTC).timestamp() if expiry else time.time() + 300.0
        return str(self._credentials.token), expires

    def check(self) -> None:
        """Resolve the credentials (no token request at start-up: that is on first use)."""
        if self._credentials is None:
            self._credentials = self._load()


__all__ = [
    "AwsCredentials",
    "CommandToken",
    "FileToken",
    "GoogleToken",
    "StaticToken",
    "TokenSource",
    "parse_time",
    "run_command",
    "token_source",
]

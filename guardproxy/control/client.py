"""A small client for the control API, used by the CLI (and by `run` to attach)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

DEFAULT_DATA_DIR = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / (
    "guardproxy"
)
APPROVER_TOKEN_ENV = "GUARDPROXY_APPROVER_TOKEN"


def approver_token_file() -> Path:
    """Where an approver keeps their own token: ``~/.config/guardproxy/approver-token``."""
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "guardproxy" / "approver-token"


class ControlError(Exception):
    """The control API could not be reached or refused the call; the message says why."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


STEP_WAIT_SECONDS = 960.0
"""How long an approval's answer may take when safety steps run before the release (the
guard bounds a step at 15 minutes by default)."""


@dataclass(frozen=True)
class ControlClient:
    url: str
    token: str
    timeout: float = 10.0

    @classmethod
    def locate(
        cls, *, url: str | None = None, token: str | None = None, data_dir: Path | None = None
    ) -> ControlClient:
        """URL and admin token from flags, else the environment, else the data directory."""
        directory = data_dir or Path(os.environ.get("GUARDPROXY_DATA_DIR") or DEFAULT_DATA_DIR)
        url = _control_url(url, directory)
        token = token or os.environ.get("GUARDPROXY_CONTROL_TOKEN")
        if not token:
            try:
                token = (directory / "control-token").read_text(encoding="ascii").strip()
            except OSError:
                raise ControlError(
                    f"no control token in {directory}; pass --token or set GUARDPROXY_CONTROL_TOKEN"
                ) from None
        return cls(url.rstrip("/"), token)

    @classmethod
    def as_approver(
        cls, *, url: str | None = None, token: str | None = None, data_dir: Path | None = None
    ) -> ControlClient:
        """URL as :meth:`locate`; the approver's own token from the flag, else
        ``GUARDPROXY_APPROVER_TOKEN``, else :func:`approver_token_file`."""
        directory = data_dir or Path(os.environ.get("GUARDPROXY_DATA_DIR") or DEFAULT_DATA_DIR)
        url = _control_url(url, directory)
        token = token or os.environ.get(APPROVER_TOKEN_ENV)
        if not token:
            path = approver_token_file()
            try:
                token = path.read_text(encoding="ascii").strip()
            except OSError:
                token = ""
            if not token:
                raise ControlError(
                    f"no approver token: pass --token, set {APPROVER_TOKEN_ENV}, or put it in "
                    f"{path} (an admin creates one with `guardproxy approvers add NAME --group G`)"
                )
        return cls(url.rstrip("/"), token)

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        # the control API is local: never send it through a proxy from the environment
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=timeout or self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            payload = _json_or_none(error.read())
            message = payload.get("error") if isinstance(payload, dict) else None
            hint = payload.get("hint") if isinstance(payload, dict) else None
            text = (message or f"HTTP {error.code}") + (f" ({hint})" if hint else "")
            raise ControlError(text, error.code, payload) from None
        except (urllib.error.URLError, OSError) as error:
            raise ControlError(f"cannot reach guardproxy at {self.url}: {error}") from None

    def holds(self, state: str = "pending", session: str | None = None) -> list[dict[str, Any]]:
        query = urlencode({"state": state, **({"session": session} if session else {})})
        result = self.call("GET", f"/v1/holds?{query}")
        return list(result["holds"])

    def hold(self, hold_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/holds/{quote(hold_id)}")
        return result

    def resolve(
        self,
        hold_id: str,
        *,
        approve: bool,
        reason: str,
        steps: list[str] | None = None,
        step_timeout: float = STEP_WAIT_SECONDS,
    ) -> dict[str, Any]:
        """``{"hold": detail, "outcome": "what happened, what is still needed"}``.

        ``steps``: safety steps the approver chooses (``--with snapshot``); the answer
        comes once they have run (a snapshot may take minutes: ``step_timeout``), and so
        does the answer to an approval whose required steps run."""
        verb = "approve" if approve else "deny"
        body: dict[str, Any] = {"reason": reason}
        if steps:
            body["steps"] = steps
        result: dict[str, Any] = self.call(
            "POST", f"/v1/holds/{quote(hold_id)}/{verb}", body,
            timeout=max(self.timeout, step_timeout) if approve else None,
        )  # fmt: skip
        return result

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/v1/whoami")
        return result


def _control_url(url: str | None, directory: Path) -> str:
    url = url or os.environ.get("GUARDPROXY_CONTROL_URL")
    if url:
        return url
    runtime = directory / "runtime.json"
    try:
        return str(json.loads(runtime.read_text(encoding="utf-8"))["control"])
    except (OSError, ValueError, KeyError):
        raise ControlError(
            f"no running guardproxy found ({runtime} missing); start `guardproxy serve`, "
            "or pass --control URL"
        ) from None


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None

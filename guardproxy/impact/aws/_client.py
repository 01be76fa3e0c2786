"""AWS calls for previews and snapshots: one botocore session, a client per call bounded
by the budget, errors as one-line ImpactErrors, paged lists read up to a cap, polling.

Calls go to the held request's own endpoint when it is not an AWS host (LocalStack, a
test server) and to botocore's endpoint for the region otherwise; each call takes one of
the budget's calls and at most its time left (no retries).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from guardproxy.impact.access import USER_AGENT, Access
from guardproxy.impact.model import Budget, ImpactError

_SESSION_LOCK = threading.Lock()
_SESSION: Any = None
PAGE_CAP = 10
"""Pages of a list read at most (resources, exports, objects)."""
POLL_SECONDS = 1.0


def _session() -> Any:
    global _SESSION  # noqa: PLW0603 - one botocore session: its model loading is costly
    with _SESSION_LOCK:
        if _SESSION is None:
            import botocore.session  # noqa: PLC0415

            _SESSION = botocore.session.Session()
        return _SESSION


def _is_aws_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn", ".api.aws"))


class AwsTarget:
    """The held request's AWS side: its parameters, its credentials, its endpoint."""

    def __init__(self, access: Access, params: list[dict[str, Any]], service: str) -> None:
        self.access = access
        self.readings = params
        self.service = service

    @property
    def params(self) -> dict[str, Any]:
        return self.readings[0] if self.readings else {}

    def one(self, name: str) -> str:
        """The parameter's value, the same in every reading (ImpactError otherwise: an
        ambiguous request is not previewed or snapshotted as one of its readings)."""
        values = {str(p.get(name, "")) for p in self.readings}
        if len(values) != 1 or not next(iter(values)):
            raise ImpactError(f"the request does not name one {name}")
        return values.pop()

    def client(self, service: str, budget: Budget) -> Any:
        """A botocore client for ``service``, counted and bounded by ``budget``."""
        from botocore.config import Config  # noqa: PLC0415

        credentials = self.access.aws_credentials()
        origin = self.access.origin
        endpoint = None if _is_aws_host(origin.host) else origin.url
        trust = self.access.trust()
        left = budget.left()
        config = Config(
            connect_timeout=max(0.1, min(left, 10.0)),
            read_timeout=max(0.1, min(left, 60.0)),
            retries={"total_max_attempts": 1, "mode": "standard"},
            user_agent_extra=USER_AGENT,
            proxies={},
            s3={"addressing_style": "path"} if endpoint else {},
        )
        session = _session()
        with _SESSION_LOCK:  # botocore sessions are not safe to create clients concurrently
            client = session.create_client(
                service,
                region_name=self.access.region or "us-east-1",
                endpoint_url=endpoint,
                aws_access_key_id=credentials.access_key,
                aws_secret_access_key=credentials.secret_key,
                aws_session_token=credentials.token,
                config=config,
                verify=str(trust) if trust else True,
            )

        def count(**_: Any) -> None:
            budget.call()

        client.meta.events.register("before-send", count)
        return _Calls(client)


class _Calls:
    """A botocore client whose errors are one-line ImpactErrors."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

            try:
                return method(**kwargs)
            except ImpactError:
                raise
            except ClientError as error:
                info = error.response.get("Error", {})
                code, message = info.get("Code", "error"), info.get("Message", "")
                raise ImpactError(f"{name}: {code}" + (f": {message}" if message else "")) from None
            except BotoCoreError as error:
                text = str(error)
                if "timeout" in text.lower():
                    text = "the endpoint did not answer in time"
                raise ImpactError(f"{name}: {text}") from None
            except Exception as error:  # botocore's parsers raise their own kinds
                raise ImpactError(f"{name} failed ({type(error).__name__})") from None

        return call


def read_pages(
    fetch: Callable[..., dict[str, Any]], key: str, token: str, out_token: str = "", **kwargs: Any
) -> tuple[list[Any], bool]:
    """Items of ``key`` over at most PAGE_CAP pages; whether more were left unread."""
    items: list[Any] = []
    marker = ""
    for _ in range(PAGE_CAP):
        answer = fetch(**kwargs, **({token: marker} if marker else {}))
        items.extend(answer.get(key) or [])
        marker = str(answer.get(out_token or token) or "")
        if not marker:
            return items, False
    return items, True


def time_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value or "")


# -- previews ---------------------------------------------------------------------------


def wait_until(
    budget: Budget, what: str, poll: Callable[[], str], done: set[str], failed: set[str]
) -> str:
    """Poll until the status is in ``done`` (returned), ImpactError if it fails or the
    budget runs out."""
    while True:
        status = poll()
        if status in done:
            return status
        if status in failed:
            raise ImpactError(f"{what} is {status}")
        left = budget.left()
        time.sleep(min(POLL_SECONDS, left))

"""Answers in the client's own error format, so its CLI or SDK prints our message.

Each provider module declares its error body (``ProviderModule.error`` in the
provider registry, ``guardproxy/recognise/registry.py``); a protocol that carries a
refusal inside a successful response (a git push report) declares that too, and it is
used whatever the action's provider. A provider without one, and an unknown request,
get guardproxy's own JSON.

A denial or a pending hold is always HTTP 403 with an error code the SDKs do not
retry: never 5xx, 429 or a throttling code (botocore retries those, and a retried
destroy is the last thing we want), never a dropped connection (also retried).
"""

from __future__ import annotations

from dataclasses import dataclass

from guardproxy.action import Action
from guardproxy.recognise.providers import PROVIDERS
from guardproxy.recognise.registry import NativeError, json_error
from guardproxy.recognise.request import HttpRequest


@dataclass(frozen=True)
class NativeAnswer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def native_answer(
    request: HttpRequest, action: Action, message: str, *, decision: str, reference: str
) -> NativeAnswer:
    """The refusal for ``decision`` (deny or hold) shaped for ``action``'s API."""
    error = _in_band(request, message, decision, reference) or _error(
        request, action, message, reference
    )
    headers = (
        ("X-Guardproxy-Decision", decision),
        ("X-Guardproxy-Id", reference),
        ("Cache-Control", "no-store"),
        *error.headers,
        ("Content-Type", error.content_type),
    )
    return NativeAnswer(error.status, headers, error.body)


def _in_band(
    request: HttpRequest, message: str, decision: str, reference: str
) -> NativeError | None:
    for module in PROVIDERS:
        if module.in_band_refusal is not None:
            found = module.in_band_refusal(request, message, decision, reference)
            if found is not None:
                return found
    return None


def _error(request: HttpRequest, action: Action, message: str, reference: str) -> NativeError:
    module = PROVIDERS.get(action.provider)
    if module is not None and module.error is not None:
        return module.error(request, action, message, reference)
    body = {"error": "guardproxy", "message": message, "id": reference}
    return json_error("application/json", body)


__all__ = ["NativeAnswer", "native_answer"]

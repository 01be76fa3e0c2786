"""Building blocks of the providers' destructive examples (``Example`` in the registry;
``catalogue.py`` collects them).

Every name an example gives is :data:`NAME`: no environment token in it (see
``naming.environment_from_names``), so without a selector the environment is
``unknown``.
"""

from __future__ import annotations

import json

from guardproxy.action import Verb
from guardproxy.recognise.request import HttpRequest

__all__ = ["DESTRUCTIVE_VERBS", "NAME", "example_request"]

DESTRUCTIVE_VERBS = frozenset({Verb.DELETE, Verb.DESTROY, Verb.PERMISSION})

NAME = "calc"

_JSON = ("content-type", "application/json")


def example_request(
    method: str,
    host: str,
    path: str,
    body: object = b"",
    headers: tuple[tuple[str, str], ...] = (),
    port: int = 443,
) -> HttpRequest:
    """An HTTPS request as a client sends it: ``body`` as JSON unless it is bytes, with a
    JSON content type unless ``headers`` give one."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = headers + ((_JSON,) if data and not any(k == "content-type" for k, _ in headers) else ())
    return HttpRequest(
        method=method,
        scheme="https",
        host=host,
        port=port,
        path=path,
        headers=(("host", host), *sent),
        body=data,
        host_header=host,
    )

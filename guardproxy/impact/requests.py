"""What a held request asks for, read with the recognisers' own parsers (the server's
reading): AWS parameters (botocore's models), git ref updates (receive-pack's
protocol). The one place this package reads recogniser internals."""

from __future__ import annotations

from typing import Any

from guardproxy.recognise.providers.aws.index import shared_index
from guardproxy.recognise.providers.aws.recogniser import read_request
from guardproxy.recognise.providers.git.receive import PushCommands, ReceivePackError, read_push
from guardproxy.recognise.request import HttpRequest

__all__ = ["aws_readings", "git_push"]


def aws_readings(request: HttpRequest) -> list[dict[str, Any]]:
    """The parameters of every reading a server may take of ``request`` (an SDK's
    request has one), canonical first; empty when no model knows the operation."""
    found = read_request(request, shared_index())
    return [reading.params for reading in found.readings if reading.params is not None]


def git_push(request: HttpRequest) -> PushCommands | None:
    """The ref updates of a receive-pack request (None if it does not parse)."""
    try:
        return read_push(request.body)
    except (ReceivePackError, ValueError):
        return None

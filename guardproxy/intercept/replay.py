"""A mitmproxy flow file as the decision pipeline's exchanges, for ``guardproxy replay --flows``.

Each HTTP flow becomes an :class:`~guardproxy.pipeline.replay.Exchange` the way the Guard
addon reads a live flow: the request by :func:`~guardproxy.intercept.flows.http_request`
(the real destination, every header but Proxy-Authorization), the session from the
flow's ``guardproxy.session`` metadata, else the client's anonymous session (what the
proxy gives a client without a credential), the time from the request's start, the
response's status and raw body (what the names learner reads on the proxy). Flows of
other kinds (TCP, UDP, DNS) are skipped and counted.

A flow file can only hold plain values: :func:`storable_metadata` is guardproxy's live
metadata of a flow (its session, its decision id) as a capture keeps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
from mitmproxy import http, io

from guardproxy.context import SessionInfo
from guardproxy.intercept.flows import DECISION, SESSION, http_request
from guardproxy.pipeline.replay import Exchange, FlowReport, replay_exchanges
from guardproxy.policy import Bundle
from guardproxy.recognise.request import RecogniseSettings
from guardproxy.session.history import HistorySettings
from guardproxy.session.registry import anonymous_session
from guardproxy.store.base import Store


def storable_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata guardproxy keeps on a live flow, as plain values a flow file holds
    and :func:`flow_session` reads back: a session's fields and the decision id. An
    anonymous session is left out: it is the client's own, which replay derives from
    the client's address as the proxy did (so does a capture without our metadata)."""
    stored: dict[str, Any] = {}
    session = metadata.get(SESSION)
    if isinstance(session, SessionInfo) and not session.anonymous:
        stored[SESSION] = session.model_dump(mode="json")
    decision = metadata.get(DECISION)
    if isinstance(decision, str):
        stored[DECISION] = decision
    return stored


def flow_session(flow: http.HTTPFlow) -> SessionInfo:
    """The session the proxy attributed ``flow`` to: its ``guardproxy.session`` metadata
    (a session, its fields, or a bare session id), else the client's anonymous session.

    Raises ValueError if the metadata is there but is not a session.
    """
    named = flow.metadata.get(SESSION)
    if isinstance(named, SessionInfo):
        return named
    if isinstance(named, dict):
        try:
            return SessionInfo.model_validate(named)
        except pydantic.ValidationError:
            raise ValueError(f"its {SESSION} metadata is not a guardproxy session") from None
    if isinstance(named, str) and named:
        return SessionInfo(id=named, name="replay", anonymous=False)
    if named is not None:
        raise ValueError(f"its {SESSION} metadata is not a guardproxy session")
    peer = flow.client_conn.peername
    return anonymous_session(peer[0] if peer else "unknown")


def exchange(flow: http.HTTPFlow) -> Exchange:
    """``flow`` as the pipeline replays it."""
    response = flow.response
    decision_id = flow.metadata.get(DECISION)
    return Exchange(
        request=http_request(flow),
        session=flow_session(flow),
        at=datetime.fromtimestamp(flow.request.timestamp_start, UTC),
        status=None if response is None else response.status_code,
        body=b"" if response is None else (response.raw_content or b""),
        decision_id=decision_id if isinstance(decision_id, str) else None,
    )


def read_exchanges(path: Path) -> Iterator[Exchange | None]:
    """The flows of ``path`` in order, each an exchange (None: not an HTTP flow).

    Raises mitmproxy's own errors for a file that is not a flow file, ValueError
    (naming the flow) for a flow whose metadata is unusable.
    """
    with path.open("rb") as handle:
        for index, flow in enumerate(io.FlowReader(handle).stream()):
            if not isinstance(flow, http.HTTPFlow):
                yield None
                continue
            try:
                yield exchange(flow)
            except ValueError as error:
                raise ValueError(f"flow #{index}: {error}") from None


def replay_flows(
    path: Path,
    bundle: Bundle,
    settings: RecogniseSettings,
    *,
    history_settings: HistorySettings | None = None,
    recorded: Store | None = None,
) -> FlowReport:
    """Decide every HTTP request of the flow file ``path`` in order, as the proxy would
    have (see guardproxy/pipeline/replay.py)."""
    return replay_exchanges(
        read_exchanges(path),
        bundle,
        settings,
        history_settings=history_settings,
        recorded=recorded,
    )


__all__ = ["exchange", "flow_session", "read_exchanges", "replay_flows", "storable_metadata"]

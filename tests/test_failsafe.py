"""An exception in a guardproxy hook refuses the flow: mitmproxy itself would forward it.

The decorators are exercised on mitmproxy's own test flows; the real addons on the
wire are in tests/adversarial/test_faults.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from types import SimpleNamespace
from typing import Any, cast

import mitmproxy.proxy.layers
import mitmproxy.proxy.server_hooks
import pytest
from mitmproxy import connection, hooks, http, tls
from mitmproxy.addonmanager import AddonManager
from mitmproxy.proxy import server_hooks
from mitmproxy.test import taddons, tflow

from guardproxy.intercept import addons, failsafe
from guardproxy.intercept.failsafe import (
    Failsafe,
    SafeStream,
    async_request_hook,
    connection_hook,
    contained_hook,
    is_failsafe,
    request_hook,
    response_hook,
    tls_hook,
)
from guardproxy.intercept.flows import ACTION, DECISION
from guardproxy.metrics import Metrics
from guardproxy.recognise import recognise
from guardproxy.recognise.request import RecogniseSettings

KUBE = "kube.test"
SETTINGS = RecogniseSettings(kubernetes_hosts=(f"{KUBE}:443",))
LIFECYCLE = {"load", "configure", "running", "done", "update", "add_log"}
"""Hooks about the proxy itself, not about a flow or a connection."""


class Broken:
    """An addon whose every hook raises, wrapped as guardproxy's are."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.failsafe = Failsafe(SETTINGS, metrics)
        self.calls = 0

    def _fail(self) -> None:
        self.calls += 1
        raise RuntimeError("a bug on the request path")

    @request_hook
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._fail()

    @async_request_hook
    async def request(self, flow: http.HTTPFlow) -> None:
        await asyncio.sleep(0)
        self._fail()

    @connection_hook
    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._fail()

    @tls_hook
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        data.ignore_connection = True  # half done, then the failure
        self._fail()

    @response_hook
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._fail()

    @contained_hook
    def client_disconnected(self, client: connection.Client) -> None:
        self._fail()


def _kube_delete() -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.scheme = "https"
    flow.request.host = KUBE
    flow.request.port = 443
    flow.request.method = "DELETE"
    flow.request.path = "/api/v1/namespaces/prod"
    return flow


def _assert_native_deny(flow: http.HTTPFlow) -> None:
    assert flow.response is not None
    assert flow.response.status_code == 403
    assert flow.response.headers["X-Guardproxy-Decision"] == "deny"
    status = json.loads(flow.response.content or b"")
    assert status["kind"] == "Status"  # the Kubernetes API's own error: kubectl prints it
    assert failsafe.MESSAGE in status["message"]


async def _run_hook(addon: Any, name: str, *args: Any) -> None:
    """The hook as mitmproxy runs it (``safecall``: an escaping exception is swallowed)."""
    with taddons.context() as context:  # type: ignore[no-untyped-call]
        context.master.addons.add(addon)
        manager: AddonManager = context.master.addons
        await manager.trigger_event(hooks.all_hooks[name](*args))


def test_every_hook_of_every_addon_is_wrapped() -> None:
    assert mitmproxy.proxy.layers and mitmproxy.proxy.server_hooks  # hook names registered
    found = []
    for _, cls in inspect.getmembers(addons, inspect.isclass):
        if cls.__module__ != addons.__name__:
            continue
        for name in set(hooks.all_hooks) - LIFECYCLE:
            hook = getattr(cls, name, None)
            if hook is not None:
                found.append(f"{cls.__name__}.{name}")
                assert is_failsafe(hook), f"{cls.__name__}.{name} can fail open"
    assert {"SessionAuth.requestheaders", "BodyGuard.request", "Guard.request"} <= set(found)
    assert {"Guard.server_connect", "Passthrough.tls_clienthello"} <= set(found)


@pytest.mark.parametrize("name", ["requestheaders", "request"])
def test_a_failing_request_hook_answers_a_native_403(name: str) -> None:
    metrics = Metrics()
    addon = Broken(metrics)
    flow = _kube_delete()
    flow.metadata[DECISION] = "d-1"  # an allow recorded before the failure
    asyncio.run(_run_hook(addon, name, flow))
    assert addon.calls == 1
    _assert_native_deny(flow)
    assert DECISION not in flow.metadata  # no upstream status will be recorded for it
    assert b'guardproxy_requests_failed_closed_total{reason="error"} 1.0' in metrics.exposition()


def test_the_refusal_is_shaped_by_the_action_already_recognised() -> None:
    flow = tflow.tflow()  # not a Kubernetes host: recognised again, it would be generic
    kube = _kube_delete()
    flow.metadata[ACTION] = recognise(
        addons.http_request(kube), SETTINGS
    )  # what Guard keeps once it has decided
    asyncio.run(_run_hook(Broken(), "requestheaders", flow))
    _assert_native_deny(flow)


def test_a_refusal_that_cannot_be_built_natively_is_plain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_answer(*args: object, **kwargs: object) -> None:
        raise MemoryError("no native answer")

    monkeypatch.setattr(failsafe, "native_answer", broken_answer)
    flow = _kube_delete()
    asyncio.run(_run_hook(Broken(), "request", flow))
    assert flow.response is not None
    assert flow.response.status_code == 403
    assert flow.response.headers["X-Guardproxy-Decision"] == "deny"
    assert failsafe.MESSAGE in (flow.response.text or "")


def test_when_no_answer_can_be_made_the_flow_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise MemoryError("nothing can be built")

    monkeypatch.setattr(failsafe, "native_answer", broken)
    monkeypatch.setattr(http.Response, "make", broken)
    flow = _kube_delete()
    asyncio.run(_run_hook(Broken(), "request", flow))
    assert flow.response is None
    assert flow.error is not None and flow.error.msg == "Connection killed."


def test_a_failing_connection_check_refuses_the_connection() -> None:
    server = connection.Server(address=("127.0.0.1", 8081))
    data = server_hooks.ServerConnectionHookData(server, tflow.tclient_conn())
    asyncio.run(_run_hook(Broken(), "server_connect", data))
    assert isinstance(server.error, str) and "refused" in server.error


def test_a_failing_passthrough_check_intercepts() -> None:
    hello = cast(tls.ClientHelloData, SimpleNamespace(ignore_connection=False))
    addon = Broken()
    addon.tls_clienthello(hello)
    assert addon.calls == 1
    assert hello.ignore_connection is False


def test_a_failing_response_hook_lets_the_response_stream() -> None:
    flow = tflow.tflow(resp=True)
    asyncio.run(_run_hook(Broken(), "responseheaders", flow))
    assert flow.response is not None and flow.response.stream is True


def test_a_failing_hook_off_the_request_path_is_contained() -> None:
    addon = Broken()
    addon.client_disconnected(tflow.tclient_conn())  # does not raise
    assert addon.calls == 1


def test_a_failing_stream_callable_passes_the_response_on() -> None:
    seen = []

    def learner(chunk: bytes) -> bytes:
        seen.append(chunk)
        raise ValueError("cannot learn")

    stream = SafeStream(learner)
    assert [stream(b"a"), stream(b"b"), stream(b"")] == [b"a", b"b", b""]
    assert seen == [b"a"]  # after its failure the learner is left out

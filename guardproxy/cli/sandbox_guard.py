"""Root mode's guard: ``python -m guardproxy.cli.sandbox_guard``, run as the guard's user.

``guardproxy run --enforce`` (as root) starts it in a session of its own (a terminal's
Ctrl-C is the agent's) and speaks to it in JSON lines:

* in, first: ``{"config": ProxyConfig, "session": registration}``; out: where it
  listens (``proxy_port``, ``control_port``, ``ports`` on the veth pair), the session's
  ``id``, ``token`` and broker offer (the stand-ins it holds), the CA certificate,
  whether it owns runtime.json; or
  ``{"error": one line}`` and exit code 2;
* in: ``{"reload_tls": true}`` (the session brought upstream CAs); out: ``{"ok": true}``;
* end of input (``run`` ended, or died): the session ends and the guard stops.
  SIGTERM, SIGINT and SIGHUP do the same.

Its standard output carries only these lines (anything printed goes to stderr, with
the guard's log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, TextIO

import pydantic

from guardproxy.cli.session import SessionError, register_session
from guardproxy.cli.session_setup import broker_offer
from guardproxy.config import ProxyConfig
from guardproxy.gate.gate import utc_now
from guardproxy.log import configure_logging
from guardproxy.server import Guardproxy, StartError


def _say(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _read_commands(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line)
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def _guard(config: ProxyConfig, body: dict[str, Any], out: TextIO) -> int:
    assert config.sandbox_network is not None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, queue.put_nowait, None)
    service = Guardproxy(config, take_over_runtime=False)
    await service.start()
    session_id = ""
    try:
        registry, proxy, control = service.registry, service.proxy, service.control
        assert registry is not None and proxy is not None and control is not None
        session, credential = await asyncio.to_thread(register_session, registry, body)
        session_id = session.id
        offer = await asyncio.to_thread(broker_offer, service.broker, session_id, body)
        proxy.bind_sandbox_client(config.sandbox_network.client, session)
        _say(out, {
            "session": {"id": session.id, "token": credential.token, "broker": offer},
            "proxy_port": proxy.port,
            "control_port": control.port,
            "ports": proxy.sandbox_ports(),
            "ca_cert": str(proxy.ca_cert),
            "runtime_owned": service.runtime_file.owned,
        })  # fmt: skip
        threading.Thread(target=_read_commands, args=(loop, queue), daemon=True).start()
        while (line := await queue.get()) is not None:
            if json.loads(line).get("reload_tls"):
                await service.reload_tls()
                _say(out, {"ok": True})
    finally:
        if session_id and service.registry is not None:
            await asyncio.to_thread(service.registry.end, session_id, utc_now())
        await service.stop()
    return 0


def main() -> int:
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")  # the protocol's lines only
    os.dup2(2, 1)
    configure_logging()
    try:
        request = json.loads(sys.stdin.readline())
        config = ProxyConfig.model_validate(request["config"])
        body = dict(request["session"])
    except (ValueError, KeyError, TypeError, pydantic.ValidationError) as error:
        _say(out, {"error": f"the guard got an unreadable request ({error})"})
        return 2
    if config.sandbox_network is None:
        _say(out, {"error": "the guard got no sandbox network"})
        return 2
    try:
        return asyncio.run(_guard(config, body, out))
    except (StartError, SessionError) as error:
        _say(out, {"error": str(error)})
        return 2
    except Exception as error:  # a bug: one line for run, the traceback in the log
        logging.getLogger(__name__).exception("sandbox guard failed")
        _say(out, {"error": f"the guard failed: {type(error).__name__}: {error}"})
        return 70


if __name__ == "__main__":
    sys.exit(main())

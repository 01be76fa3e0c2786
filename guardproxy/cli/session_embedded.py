"""``guardproxy run`` with a guard of its own: started in this process for the session
(cooperative, or enforced in the rootless sandbox), stopped when the command ends.
"""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Any

from guardproxy.cli.serve import build_config
from guardproxy.cli.session_setup import (
    Sandbox,
    broker_offer,
    guard_paths,
    launch_session,
    prepare_session,
    print_banner,
    register_session,
    store_files,
)
from guardproxy.gate.gate import utc_now
from guardproxy.intercept.proxy import ensure_ca
from guardproxy.server import BackgroundGuardproxy


def run_embedded(args: argparse.Namespace, command: list[str], sandbox: Sandbox | None) -> int:
    config = build_config(args, listen="127.0.0.1:0", control="127.0.0.1:0")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config.data_dir, 0o700)
    ca_cert = ensure_ca(config.ca_dir)
    # a `serve` already using this data directory keeps its runtime.json (holds, approve
    # and kill -HUP must keep finding it); this guard is then reached by its control URL
    embedded = BackgroundGuardproxy(config, take_over_runtime=False)
    sessions: dict[str, Any] = {}

    def register(body: dict[str, Any]) -> dict[str, Any]:
        registry = embedded.service.registry
        assert registry is not None
        session, credential = register_session(registry, body)
        sessions["id"] = session.id
        offer = broker_offer(embedded.service.broker, session.id, body)
        return {"id": session.id, "token": credential.token, "broker": offer}

    embedded.start()
    try:
        service = embedded.service
        assert service.proxy is not None and service.control is not None
        prepared, new_cas = prepare_session(
            args, config.data_dir, register, "127.0.0.1", service.proxy.port, ca_cert, command,
            sandbox_dir=sandbox.run_dir if sandbox else None,
        )  # fmt: skip
        if new_cas:
            embedded.call(service.reload_tls())
        control_url = f"http://127.0.0.1:{service.control.port}"
        if service.runtime_file.owned:
            finding = f" --data-dir {shlex.quote(str(config.data_dir))}"
        else:
            finding = f" --control {control_url}"
        print_banner(prepared, control_url, finding, resumed=bool(args.resume),
                enforced=sandbox is not None)  # fmt: skip
        read_only = [config.policies, *([args.config] if args.config else [])]
        return launch_session(
            prepared, command, sandbox,
            hidden=[*guard_paths(config.data_dir), *store_files(config.store_url)],
            read_only=read_only, proxy=("127.0.0.1", service.proxy.port),
        )  # fmt: skip
    finally:
        if "id" in sessions and embedded.service.registry is not None:
            embedded.service.registry.end(sessions["id"], utc_now())
        embedded.stop()

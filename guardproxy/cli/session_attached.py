"""``guardproxy run --proxy`` and ``guardproxy env``: a session attached to a running
guard, registered through its control API.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from guardproxy.cli.session_setup import (
    PreparedSession,
    Sandbox,
    guard_paths,
    launch_session,
    prepare_session,
    print_banner,
)
from guardproxy.control.client import DEFAULT_DATA_DIR, ControlClient, ControlError

SERVE_ONLY = {
    "policies": "--policies",
    "shadow_policies": "--shadow-policies",
    "config": "--config",
    "hold_window": "--hold-window",
    "passthrough": "--passthrough",
    "reverse": "--reverse",
    "env": "--env",
    "kube_host": "--kube-host",
    "upstream_ca": "--upstream-ca",
    "broker": "--broker",
    "upstream_allow": "--upstream-allow",
}
"""Options of the guard itself: an attached `run` (``--proxy``) cannot apply them."""


def _ignored_when_attached(args: argparse.Namespace) -> list[str]:
    return [flag for dest, flag in SERVE_ONLY.items() if getattr(args, dest, None)]


def run_attached(args: argparse.Namespace, command: list[str], sandbox: Sandbox | None) -> int:
    ignored = _ignored_when_attached(args)
    if ignored:
        print(
            f"guardproxy: warning: {', '.join(ignored)} configure the guard itself and are "
            f"ignored when attaching to one with --proxy; give them to `guardproxy serve`",
            file=sys.stderr,
        )
    prepared, attached = attach_session(args, command, sandbox)
    finding = "".join(
        f" {flag} {shlex.quote(str(value))}"
        for flag, value in (("--control", args.control), ("--data-dir", args.data_dir))
        if value
    )
    print_banner(prepared, prepared.control_url, finding, resumed=bool(args.resume),
            enforced=sandbox is not None)  # fmt: skip
    client = ControlClient.locate(url=args.control, token=args.token, data_dir=args.data_dir)
    try:
        return launch_session(
            prepared, command, sandbox, hidden=guard_paths(attached.data_dir),
            read_only=attached.policies, proxy=attached.proxy,
        )  # fmt: skip
    finally:
        try:
            client.call("POST", f"/v1/sessions/{prepared.session_id}/end", {})
        except ControlError as error:
            print(f"guardproxy: could not end the session: {error}", file=sys.stderr)


@dataclass
class _Attached:
    """Where the guard a session attached to keeps its data, policies and proxy."""

    data_dir: Path
    policies: list[Path]
    proxy: tuple[str, int]


def attach_session(
    args: argparse.Namespace, command: list[str], sandbox: Sandbox | None = None
) -> tuple[PreparedSession, _Attached]:
    client = ControlClient.locate(url=args.control, token=args.token, data_dir=args.data_dir)
    data_dir = Path(args.data_dir or os.environ.get("GUARDPROXY_DATA_DIR") or DEFAULT_DATA_DIR)
    runtime = client.call("GET", "/v1/runtime")
    ca_cert = Path(runtime["ca_cert"])
    if args.proxy:
        split = urlsplit(args.proxy if "//" in args.proxy else f"http://{args.proxy}")
        host, port = split.hostname or "127.0.0.1", split.port or 8080
    else:
        host, _, port_text = str(runtime["proxy"]).rpartition(":")
        port = int(port_text)

    def register(body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = client.call("POST", "/v1/sessions", body)
        return result

    prepared, new_cas = prepare_session(
        args, data_dir, register, host, port, ca_cert, command,
        sandbox_dir=sandbox.run_dir if sandbox else None,
    )  # fmt: skip
    if new_cas:
        client.call("POST", "/v1/tls/reload", {})
    prepared.control_url = client.url
    policies = [Path(runtime["policies"])] if runtime.get("policies") else []
    return prepared, _Attached(data_dir, policies, (host, port))

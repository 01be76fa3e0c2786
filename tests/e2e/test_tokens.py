"""Secrets on the command line: tokens carry a prefix (never a leading `-`), and a
secret that starts with `-` (an older token) is still read as the option's value."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from guardproxy.session.environment import proxy_url

from .guard_fixtures import describe, guardproxy_cli, run_client
from .servers import EchoServer
from .test_guard import start_guard

OLD_TOKEN = "-6GB3oldStyleTokenThatStartsWithADash_x1"
"""An admin token as older versions wrote it (URL-safe base64 may begin with `-`)."""


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    env["XDG_CONFIG_HOME"] = str(data_dir.parent / "config")  # no approver-token file
    return run_client([*guardproxy_cli(), *args, "--data-dir", str(data_dir)], env, timeout=60)


def test_an_old_token_starting_with_a_dash_keeps_working(
    tmp_path: Path, echo_server: EchoServer
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    token_file = data_dir / "control-token"
    token_file.write_text(OLD_TOKEN + "\n")
    token_file.chmod(0o600)
    guard = start_guard(tmp_path, echo_server)
    try:
        assert guard.control.token == OLD_TOKEN  # kept as it was: existing setups go on
        reloaded = cli(data_dir, "policy", "reload", "--token", OLD_TOKEN)
        assert reloaded.returncode == 0, describe(reloaded)
        assert "unchanged" in reloaded.stdout
        # the reported failure: `holds --token -6GB3...` was an argparse error
        as_admin = cli(data_dir, "holds", "--token", OLD_TOKEN)
        assert as_admin.returncode == 1, describe(as_admin)
        assert "expected one argument" not in as_admin.stderr
        assert "verdicts need a person" in as_admin.stderr
        joined = cli(data_dir, "holds", f"--token={OLD_TOKEN}")
        assert "verdicts need a person" in joined.stderr
    finally:
        guard.background.stop()


def test_new_tokens_carry_their_prefix(tmp_path: Path, echo_server: EchoServer) -> None:
    guard = start_guard(tmp_path, echo_server)
    try:
        assert guard.control.token.startswith("gpc_")
        session = guard.control.call(
            "POST", "/v1/sessions",
            {"name": "t", "user": "u", "command": ["x"], "cwd": "/", "labels": []},
        )  # fmt: skip
        assert session["token"].startswith("gps_")
        for token, status in ((session["token"], 200), (session["token"] + "x", 407)):
            url = proxy_url("127.0.0.1", guard.port, session["id"], token)
            with httpx.Client(proxy=url, timeout=15) as client:
                response = client.get(f"{echo_server.url}/api/v1/namespaces")
            assert response.status_code == status
    finally:
        guard.background.stop()

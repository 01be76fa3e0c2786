"""`guardproxy run`: the wrapped command's exit code, signals and environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
GUARDPROXY = [sys.executable, "-m", "guardproxy"]


def _run(tmp_path: Path, *command: str) -> subprocess.Popen[str]:
    argv = [*GUARDPROXY, "run", "--data-dir", str(tmp_path / "data"), "--policies",
            str(ROOT / "policies"), "--", *command]  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("KUBECONFIG", None)
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_exit_code_and_banner(tmp_path: Path) -> None:
    process = _run(tmp_path, "sh", "-c", "exit 7")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 7
    assert "guardproxy: session s-" in err
    assert "is guarded by 127.0.0.1:" in err


def test_the_session_environment(tmp_path: Path) -> None:
    script = (
        'echo "$HTTPS_PROXY"; echo "$SSL_CERT_FILE"; echo "$AWS_CA_BUNDLE"; '
        'echo "$NODE_EXTRA_CA_CERTS"; echo "$GUARDPROXY_SESSION"; echo "${NO_PROXY-unset}"; '
        'echo "${GUARDPROXY_CONTROL_TOKEN-absent}"'
    )
    process = _run(tmp_path, "sh", "-c", script)
    out, _ = process.communicate(timeout=60)
    proxy, bundle, aws_bundle, node_ca, session, no_proxy, token = out.splitlines()
    assert proxy.startswith(f"http://{session}:") and "@127.0.0.1:" in proxy
    assert bundle == aws_bundle and Path(bundle).name == "ca-bundle.pem"
    text = Path(bundle).read_text()
    assert Path(node_ca).read_text().strip() in text  # guardproxy's CA plus existing roots
    assert text.count("BEGIN CERTIFICATE") > 10
    assert no_proxy == ""
    assert token == "absent"
    control_token = (tmp_path / "data" / "control-token").read_text().strip()
    assert control_token not in out


def test_signals_reach_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "got-term"
    script = f"trap 'touch {marker}; exit 3' TERM; while true; do sleep 0.1; done"
    process = _run(tmp_path, "sh", "-c", script)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if (tmp_path / "data" / "sessions").exists():
            break
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert marker.exists()
    assert process.returncode == 3


def test_a_missing_command_is_a_usage_error(tmp_path: Path) -> None:
    process = _run(tmp_path)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "run needs a command" in err


@pytest.mark.parametrize("missing", ["no-such-binary-xyz"])
def test_an_unknown_command_is_reported(tmp_path: Path, missing: str) -> None:
    process = _run(tmp_path, missing)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert f"cannot run {missing}" in err

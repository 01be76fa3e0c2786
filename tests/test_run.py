"""`guardproxy run`: the wrapped command's exit code, signals and environment."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from guardproxy.control.client import ControlClient

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


# ---------------------------------------------------------------------------
# runtime.json: a standalone run beside a running serve (same data directory)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    env["HOME"] = str(tmp_path)
    env.pop("KUBECONFIG", None)
    return env


def _runtime(data_dir: Path) -> dict[str, object] | None:
    try:
        info: dict[str, object] = json.loads((data_dir / "runtime.json").read_text())
    except (OSError, ValueError):
        return None
    return info


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@contextlib.contextmanager
def _serve(tmp_path: Path, data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `guardproxy serve` on loopback ports; stopped (SIGTERM, bounded) after."""
    argv = [*GUARDPROXY, "serve", "--data-dir", str(data_dir), "--policies",
            str(ROOT / "policies"), "--listen", "127.0.0.1:0",
            "--control", "127.0.0.1:0"]  # fmt: skip
    log = (tmp_path / f"serve-{time.monotonic_ns()}.log").open("w")
    process = subprocess.Popen(argv, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=log)
    try:
        _wait_for(
            lambda: (
                (_runtime(data_dir) or {}).get("pid") == process.pid or process.poll() is not None
            ),
            "serve to write runtime.json",
        )
        assert process.poll() is None, Path(log.name).read_text()
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _guarded(tmp_path: Path, data_dir: Path, *command: str, attach: str = "",
             options: tuple[str, ...] = ()) -> subprocess.Popen[str]:  # fmt: skip
    how = ["--proxy", attach] if attach else ["--policies", str(ROOT / "policies")]
    argv = [*GUARDPROXY, "run", "--data-dir", str(data_dir), *how, *options, "--", *command]
    return subprocess.Popen(
        argv, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_standalone_run_leaves_the_running_serves_runtime_file_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with _serve(tmp_path, data_dir) as serve:
        published = _runtime(data_dir)
        assert published is not None and published["pid"] == serve.pid
        run = _guarded(tmp_path, data_dir, "sh", "-c", f"cat {data_dir / 'runtime.json'}")
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert json.loads(out) == published  # while the run was up: still serve's file
        assert _runtime(data_dir) == published  # and after it exited
        # holds, approve and policy reload find the serve; the run's banner names its own guard
        client = ControlClient.locate(data_dir=data_dir)
        assert client.call("GET", "/v1/runtime")["pid"] == serve.pid
        assert "guardproxy holds --control http://127.0.0.1:" in err
        # the README's kill -HUP reaches the serve, which keeps running
        os.kill(int(str(published["pid"])), signal.SIGHUP)
        time.sleep(1.0)
        assert serve.poll() is None
    assert _runtime(data_dir) is None  # serve removed its own file when it stopped


def test_a_standalone_run_publishes_its_runtime_file_and_removes_only_its_own(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = {"pid": dead.pid, "control": "http://127.0.0.1:1", "instance": "gone"}
    (data_dir / "runtime.json").write_text(json.dumps(stale))
    run = _guarded(tmp_path, data_dir, "sh", "-c", f"cat {data_dir / 'runtime.json'}; echo $PPID")
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    *content, parent = out.splitlines()
    assert json.loads("\n".join(content))["pid"] == int(parent) == run.pid  # replaced the stale one
    assert f"guardproxy holds --data-dir {data_dir}" in err
    assert _runtime(data_dir) is None

    # a serve started while a run owns the file takes it over; the run's exit leaves it
    go, seen = tmp_path / "go", tmp_path / "seen.json"
    script = f"cat {data_dir / 'runtime.json'} > {seen}; while [ ! -f {go} ]; do sleep 0.1; done"
    run = _guarded(tmp_path, data_dir, "sh", "-c", script)
    try:
        _wait_for(lambda: seen.exists() and seen.stat().st_size > 0, "the run's runtime file")
        assert json.loads(seen.read_text())["pid"] == run.pid
        with _serve(tmp_path, data_dir) as serve:
            go.touch()
            _, err = run.communicate(timeout=60)
            assert run.returncode == 0, err
            owner = _runtime(data_dir)
            assert owner is not None and owner["pid"] == serve.pid
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate(timeout=10)


# ---------------------------------------------------------------------------
# banner and flags


def test_an_attached_run_names_its_data_dir_and_warns_about_the_guards_own_flags(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    with _serve(tmp_path, data_dir):
        runtime = _runtime(data_dir)
        assert runtime is not None
        flags = ("--hold-window", "5", "--env", "aws:account:111122223333=prod",
                 "--kube-host", "127.0.0.1:6443", "--passthrough", "example.test")  # fmt: skip
        run = _guarded(tmp_path, data_dir, "true", attach=f"http://{runtime['proxy']}",
                       options=flags)  # fmt: skip
        _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert (
        "guardproxy: warning: --hold-window, --passthrough, --env, --kube-host configure the "
        "guard itself and are ignored when attaching to one with --proxy; give them to "
        "`guardproxy serve`"
    ) in err
    assert f"`guardproxy holds --data-dir {data_dir}`" in err
    assert f"`guardproxy approve HOLD_ID --reason TEXT --data-dir {data_dir}`" in err


def test_serve_port_points_to_listen(tmp_path: Path) -> None:
    result = subprocess.run(
        [*GUARDPROXY, "serve", "--port", "8080", "--data-dir", str(tmp_path / "data")],
        env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "serve has no --port; give the proxy's address with --listen HOST:PORT" in (
        result.stderr
    )
    assert not (tmp_path / "data").exists()

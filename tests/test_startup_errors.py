"""Every way `guardproxy serve` (and `run`) can fail to start is one line on stderr, exit
code 2, no traceback: what failed, why, and what to do (the real CLI, as a subprocess)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from guardproxy.ops.listen import Listener, bind_problem, describe, port_holder

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
GUARDPROXY = [sys.executable, "-m", "guardproxy"]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port this test process listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def start(tmp_path: Path, *argv: str, command: str = "serve") -> tuple[int, str]:
    """Run `guardproxy COMMAND ARGV` to its failure; its exit code and its error line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    defaults = ["--data-dir", str(tmp_path / "data")]
    if "--policies" not in argv:
        defaults += ["--policies", str(POLICIES)]
    if command == "serve":
        defaults += [
            "--listen" if "--listen" not in argv else "",
            "127.0.0.1:0" if "--listen" not in argv else "",
            "--control" if "--control" not in argv else "",
            "127.0.0.1:0" if "--control" not in argv else "",
        ]
    tail = ["--", "true"] if command == "run" else []
    done = subprocess.run(
        [*GUARDPROXY, command, *[a for a in defaults if a], *argv, *tail],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90,
        check=False, cwd=tmp_path,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    # log lines are JSON (stderr is not a terminal); the error is the one other line
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("guardproxy: "), done.stderr
    return done.returncode, lines[0]


@pytest.mark.parametrize(
    ("flag", "what", "fix"),
    [
        ("--listen", "the proxy", "--listen HOST:PORT"),
        ("--control", "the control API", "--control HOST:PORT"),
        ("--metrics-listen", "the metrics port", "--metrics-listen HOST:PORT"),
    ],
)
def test_a_port_in_use_says_which_port_which_listener_and_which_flag(
    tmp_path: Path, taken_port: int, flag: str, what: str, fix: str
) -> None:
    code, line = start(tmp_path, flag, f"127.0.0.1:{taken_port}")
    assert code == 2
    assert f"cannot start {what} on 127.0.0.1:{taken_port}" in line
    assert f"port {taken_port} is already in use by pid {os.getpid()}" in line
    assert f"choose another port with {fix}" in line


def test_a_reverse_listener_port_in_use(tmp_path: Path, taken_port: int) -> None:
    code, line = start(tmp_path, "--reverse", f"{taken_port}=http://127.0.0.1:9")
    assert code == 2
    assert f"cannot start a reverse listener on 127.0.0.1:{taken_port}" in line
    assert "--reverse PORT=http://127.0.0.1:9" in line


def test_run_reports_a_taken_port_the_same_way(tmp_path: Path, taken_port: int) -> None:
    code, line = start(tmp_path, "--reverse", f"{taken_port}=http://127.0.0.1:9", command="run")
    assert code == 2
    assert f"port {taken_port} is already in use" in line


def test_two_listeners_on_one_port(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, line = start(tmp_path, "--listen", f"127.0.0.1:{port}", "--control", f"127.0.0.1:{port}")
    assert code == 2
    assert f"the proxy and the control API are both set to listen on 127.0.0.1:{port}" in line


@pytest.mark.parametrize(
    ("setup", "argv", "fragments"),
    [
        pytest.param(
            {}, ["--policies", "{tmp}/missing"],
            ["the policy bundle {tmp}/missing does not exist", "guardproxy policy init DIR"],
            id="policies-missing",
        ),
        pytest.param(
            {"broken/bundle.yaml": "apiVersion: guardproxy.dev/v1\nkind: BundleConfig\n"
                                   "metadata: {name: b}\nspec: {defaultDecision: maybe}\n"},
            ["--policies", "{tmp}/broken"],
            ["the policy bundle {tmp}/broken has errors, 2 in all; the first: "
             "{tmp}/broken/bundle.yaml:4:8: `spec.defaultDecision`",
             "guardproxy policy lint {tmp}/broken"],
            id="policies-invalid",
        ),
        pytest.param(
            {"data": "a file"}, [],
            ["cannot use the data directory {tmp}/data: {tmp}/data exists and is not a "
             "directory", "--data-dir DIR"],
            id="data-dir-is-a-file",
        ),
        pytest.param(
            {"data/ca": "a file"}, [],
            ["cannot set up the CA in {tmp}/data/ca: {tmp}/data/ca exists and is not a "
             "directory", "--data-dir DIR"],
            id="ca-dir-is-a-file",
        ),
        pytest.param(
            {}, ["--store", "mysql://db/guard"],
            ["cannot open the store mysql://db/guard: unknown store scheme 'mysql'", "--store"],
            id="store-scheme",
        ),
        pytest.param(
            {"guard.yaml": "listen: [\n"}, ["--config", "{tmp}/guard.yaml"],
            ["{tmp}/guard.yaml:2:1: the config file is not valid YAML"],
            id="config-yaml",
        ),
        pytest.param(
            {"guard.yaml": "lisen: 127.0.0.1:0\n"}, ["--config", "{tmp}/guard.yaml"],
            ["{tmp}/guard.yaml: unknown setting `lisen`; did you mean `listen`?"],
            id="config-unknown-setting",
        ),
        pytest.param(
            {}, ["--config", "{tmp}/missing.yaml"],
            ["cannot read the config file {tmp}/missing.yaml: No such file or directory"],
            id="config-missing",
        ),
        pytest.param(
            {}, ["--upstream-ca", "{tmp}/missing.pem"],
            ["upstream CA {tmp}/missing.pem: no such file", "--upstream-ca FILE"],
            id="upstream-ca-missing",
        ),
        pytest.param(
            {}, ["--listen", "127.0.0.1:99999"],
            ["listen: '127.0.0.1:99999' is not HOST:PORT"],
            id="listen-not-host-port",
        ),
    ],
)  # fmt: skip
def test_start_up_failures_are_one_line(
    tmp_path: Path, setup: dict[str, str], argv: list[str], fragments: list[str]
) -> None:
    for name, content in setup.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    code, line = start(tmp_path, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2
    for fragment in fragments:
        assert fragment.replace("{tmp}", str(tmp_path)) in line, line


# -- the diagnosis itself


def test_bind_problem_and_the_port_holder(taken_port: int) -> None:
    listener = Listener("the proxy", "127.0.0.1", taken_port, "--listen HOST:PORT")
    problem = bind_problem(listener)
    assert problem is not None
    assert port_holder(taken_port).startswith(f"pid {os.getpid()} (python")
    assert "already in use" in describe(listener, problem)
    free = Listener("the proxy", "127.0.0.1", 0, "--listen HOST:PORT")
    assert bind_problem(free) is None


def test_an_address_that_is_not_this_machines() -> None:
    # binding only: nothing is sent anywhere (TEST-NET-1, never assigned to a host)
    listener = Listener("the proxy", "192.0.2.1", 0, "--listen HOST:PORT")
    problem = bind_problem(listener)
    assert problem is not None
    assert "192.0.2.1 is not an address of this machine" in describe(listener, problem)

"""``guardproxy run --enforce``: the agent cannot reach guardproxy's own secrets or controls.

An agent running as the same user could read the control token (and make itself an
approver), the CA key or the store, reach the control API, rewrite the policies,
signal the guard. Inside the sandbox each attempt is made and must fail; the hold it
created stays pending.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from .enforce import require_enforce
from .guard_fixtures import POLICIES, StartGuard, describe, guardproxy_cli, run_client
from .servers import EchoServer

pytestmark = pytest.mark.slow

PROBE = r"""
import json, os, subprocess, sys, urllib.request, urllib.error
data_dir, policies, control_port, upstream = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
out = {}
def attempt(fn):
    try:
        return {"ok": True, "value": fn()}
    except Exception as error:
        return {"ok": False, "value": f"{type(error).__name__}: {error}"}
for name in ("control-token", "ca/mitmproxy-ca.pem", "guardproxy.db", "runtime.json"):
    path = os.path.join(data_dir, name)
    out[f"read {name}"] = attempt(lambda: open(path, "rb").read()[:40].hex())
out["list data dir"] = attempt(lambda: os.listdir(data_dir))
out["write policies"] = attempt(lambda: open(os.path.join(policies, "agent.yaml"), "w").write("x"))
out["processes"] = [open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode()
                    for p in os.listdir("/proc") if p.isdigit()]
out["environment"] = dict(os.environ)
keys = []
for variable in ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"):
    directory = os.path.dirname(os.environ[variable])
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if os.path.isfile(path) and b"PRIVATE KEY" in open(path, "rb").read():
            keys.append(path)
out["private keys"] = keys
# a destructive call through the proxy: held, its id in the answer
held = subprocess.run(["curl", "-sS", "-m", "30", "-X", "DELETE", upstream],
                      capture_output=True, text=True)
out["held"] = held.stdout + held.stderr
import re
hold = (re.findall(r"h-[a-z0-9]{10}", out["held"]) or ["h-none"])[0]
out["hold"] = hold
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
proxied = urllib.request.build_opener()
for name in ("127.0.0.1", "localhost", "localhost.", "0.0.0.0", "[::1]", "127.0.0.2",
             "[::ffff:127.0.0.1]", "2130706433"):
    for how, opener in (("direct", direct), ("proxied", proxied)):
        def call(url=f"http://{name}:{control_port}/v1/holds/{hold}/approve"):
            request = urllib.request.Request(url, data=b'{"reason": "self"}', method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with opener.open(request, timeout=20) as answer:
                    return f"{answer.status} {answer.read()[:300]!r}"
            except urllib.error.HTTPError as error:
                return f"{error.code} {error.read()[:300]!r}"
        out[f"control {how} {name}"] = attempt(call)
cli = sys.argv[5:]
for args in (["approve", hold, "--reason", "self", "--data-dir", data_dir],
             ["approvers", "add", "agent", "--data-dir", data_dir]):
    done = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=60)
    out["cli " + args[0]] = {"code": done.returncode, "out": (done.stdout + done.stderr)[-300:]}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(autouse=True)
def _enforce_available() -> None:
    require_enforce()


def test_the_agent_cannot_reach_guard_secrets_or_controls(
    tmp_path: Path, start_guard: StartGuard, echo_server: EchoServer
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    guard = start_guard(policies=policies)
    control_port = guard.control_url.rsplit(":", 1)[1]
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    upstream = f"http://127.0.0.1:{echo_server.port}/v1.43/volumes/prod-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    env.pop("KUBECONFIG", None)
    env["HOME"] = str(tmp_path)
    argv = [
        *guardproxy_cli(), "run", "--enforce", "--proxy", f"http://127.0.0.1:{guard.proxy_port}",
        "--data-dir", str(guard.data_dir), "--", sys.executable, str(probe), str(guard.data_dir),
        str(policies), control_port, upstream, *guardproxy_cli(),
    ]  # fmt: skip
    proc = run_client(argv, env, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    [line] = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    found = json.loads(line.removeprefix("RESULT "))

    for name in ("control-token", "ca/mitmproxy-ca.pem", "guardproxy.db", "runtime.json"):
        assert not found[f"read {name}"]["ok"], found[f"read {name}"]
        assert (guard.data_dir / name).exists()  # it is there, on the host
    assert found["list data dir"] == {"ok": True, "value": []}
    assert not found["write policies"]["ok"]
    assert "Read-only file system" in found["write policies"]["value"]
    assert not (policies / "agent.yaml").exists()
    assert found["private keys"] == []
    # no guardproxy process is visible: the agent's PID namespace holds only its own
    assert not [p for p in found["processes"] if "guardproxy" in p.split(" ")[0] or
                "sandbox.helper" in p or " serve" in p], found["processes"]  # fmt: skip
    environment = "\n".join(f"{k}={v}" for k, v in found["environment"].items())
    assert str(guard.data_dir) not in environment
    token = guard.config.control_token_file.read_text().strip()
    assert token not in environment and token not in proc.stdout

    hold = found["hold"]
    assert hold.startswith("h-") and hold != "h-none", found["held"]
    for key, result in found.items():
        if key.startswith("control "):
            # refused by the guard (403 naming it) or no connection: never the API's answer
            text = str(result["value"])
            assert not text.startswith(("200", "401", "404")), (key, result)
            assert "approved" not in text, (key, result)
    for command in ("cli approve", "cli approvers"):
        assert found[command]["code"] != 0, found[command]
    assert guard.hold(hold)["state"] == "pending"
    assert [r for r in echo_server.requests if r.method == "DELETE"] == []

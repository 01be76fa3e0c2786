"""Enforced (``run --enforce``) versus cooperative (``run``) sessions on allowed reads.

What it measures
    One guard (in this process, shipped policies, SQLite in a temporary directory) and
    a loopback HTTP upstream. For each mode, ``guardproxy run [--enforce] --proxy ...``
    runs a client that sends ``--requests`` allowed reads (``GET /v1.43/volumes/x``: a
    Docker read, recognised and decided like any other), one new connection per request
    (as CLI tools do), and reports each request's wall time:

    * ``cooperative``: the client uses ``HTTP_PROXY`` → the guard's proxy;
    * ``enforced, proxy-aware``: ``HTTP_PROXY`` → the in-sandbox listener → the unix
      socket → the guard's proxy;
    * ``enforced, captured``: the client ignores the proxy and connects to the upstream
      → nftables redirect → the helper → ``CONNECT`` over the unix socket → the guard.

    Also the time from ``guardproxy run`` to the end of ``true`` in both modes (session
    start-up: bubblewrap, the helper, the nested sandbox). Reported: p50, p90, p99 and
    mean per request in ms, side by side, and the enforced/cooperative ratio of p50.

How to run (from the repository root; needs bubblewrap, nftables, iproute2)
    .venv/bin/python bench/enforce_bench.py
    .venv/bin/python bench/enforce_bench.py --requests 500 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from guardproxy.config import ProxyConfig
from guardproxy.server import BackgroundGuardproxy

ROOT = Path(__file__).resolve().parent.parent
CLIENT = r"""
import json, sys, time, urllib.request
url, count, captured = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "captured"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if captured else \
    urllib.request.build_opener()
times = []
for _ in range(count):
    started = time.perf_counter()
    with opener.open(url, timeout=30) as answer:
        answer.read()
        assert answer.status == 200
    times.append(time.perf_counter() - started)
print("TIMES " + json.dumps(times))
"""


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"Name": "x"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, check=False)  # fmt: skip


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="runs per mode (interleaved)")
    args = parser.parse_args()
    cli = [str(Path(sys.executable).with_name("guardproxy"))]
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{upstream.server_address[1]}/v1.43/volumes/x"
    with tempfile.TemporaryDirectory(prefix="enforce-bench-") as tmp:
        work = Path(tmp)
        config = ProxyConfig.model_validate({
            "data_dir": work / "data", "policies": ROOT / "policies",
            "listen": "127.0.0.1:0", "control": "127.0.0.1:0",
        })  # fmt: skip
        guard = BackgroundGuardproxy(config).start()
        try:
            assert guard.service.proxy is not None
            proxy = f"http://127.0.0.1:{guard.service.proxy.port}"
            client = work / "client.py"
            client.write_text(CLIENT)
            env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
            env.pop("KUBECONFIG", None)
            env["HOME"] = str(work)
            base = [*cli, "run", "--proxy", proxy, "--data-dir", str(config.data_dir)]
            modes = {
                "cooperative": ([*base], "proxied"),
                "enforced, proxy-aware": ([*base, "--enforce"], "proxied"),
                "enforced, captured": ([*base, "--enforce"], "captured"),
            }
            times: dict[str, list[float]] = {name: [] for name in modes}
            startup: dict[str, list[float]] = {"cooperative": [], "enforced": []}
            for _ in range(args.rounds):
                for name, (run, how) in modes.items():
                    done = _run([*run, "--", sys.executable, str(client), url,
                                 str(args.requests), how], env, work)  # fmt: skip
                    lines = [x for x in done.stdout.splitlines() if x.startswith("TIMES ")]
                    if done.returncode != 0 or not lines:
                        print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                        return 1
                    times[name] += json.loads(lines[0].removeprefix("TIMES "))
                for name, run in (("cooperative", base), ("enforced", [*base, "--enforce"])):
                    started = time.perf_counter()
                    done = _run([*run, "--", "true"], env, work)
                    startup[name].append(time.perf_counter() - started)
                    assert done.returncode == 0, done.stderr[-2000:]
        finally:
            guard.stop()
            upstream.shutdown()
    print(f"allowed reads, one connection each, {args.requests} x {args.rounds} per mode "
          f"(ms per request)")  # fmt: skip
    print(f"{'mode':<24}{'p50':>8}{'p90':>8}{'p99':>8}{'mean':>8}{'vs coop p50':>13}")
    reference = statistics.median(times["cooperative"])
    for name, values in times.items():
        p50 = statistics.median(values)
        print(f"{name:<24}{p50 * 1e3:8.2f}{_percentile(values, 0.9) * 1e3:8.2f}"
              f"{_percentile(values, 0.99) * 1e3:8.2f}{statistics.fmean(values) * 1e3:8.2f}"
              f"{p50 / reference:12.2f}x")  # fmt: skip
    for name, values in startup.items():
        print(f"session start-up to the end of `true`, {name}: "
              f"median {statistics.median(values) * 1e3:.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

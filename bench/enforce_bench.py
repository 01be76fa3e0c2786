"""Enforced sessions (``run --enforce``, root mode and rootless) versus cooperative ones.

What it measures
    A loopback HTTP upstream, the shipped policies, SQLite in a temporary directory.
    For each mode, ``guardproxy run [--enforce --enforce-mode M] -- CLIENT`` (each run
    with its own guard, as a user starts one) runs a client that sends ``--requests``
    allowed reads (``GET /v1.43/volumes/x``: a Docker read, recognised and decided like
    any other), one new connection per request (as CLI tools do), and reports each
    request's wall time:

    * ``cooperative``: ``HTTP_PROXY`` -> the guard's proxy;
    * ``rootless, proxy-aware``: ``HTTP_PROXY`` -> the in-sandbox listener -> the unix
      socket -> the guard's proxy;
    * ``rootless, captured``: the client ignores the proxy -> nftables redirect in the
      sandbox -> the helper -> ``CONNECT`` over the unix socket -> the guard;
    * ``root, proxy-aware``: ``HTTP_PROXY`` -> the guard's listener on the veth pair;
    * ``root, captured``: the client ignores the proxy and connects to the upstream by
      name -> the guard's DNS -> the veth pair -> host-side nftables redirect -> the
      guard's transparent listener (mitmproxy's transparent mode).

    Also the time from ``guardproxy run`` to the end of ``true`` in each mode (session
    start-up: the guard, bubblewrap, the helper or the network namespace, veth pair and
    rules, the relay). Reported: p50, p90, p99 and mean per request in ms, side by side,
    and each mode's p50 over cooperative's.

    Root mode needs root: the guard runs as a throwaway system user the bench creates
    and removes. Where that user cannot reach this Python (a pyenv under /root), the
    root-mode runs are started in a private mount namespace that makes it reachable, as
    the end-to-end tests do (tests/e2e/enforce.py); names resolve through a hosts file
    there too. Without root, the root-mode rows are skipped.

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
from collections.abc import Generator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from e2e.enforce import (  # noqa: E402 - the tests' namespace staging and throwaway user
    UPSTREAM_NAME,
    GuardUser,
    in_test_namespace,
    make_guard_user,
    write_hosts,
)

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


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Runner:
    """``guardproxy run`` in each mode, from one working directory."""

    def __init__(self, work: Path, guard: GuardUser | None) -> None:
        self.work = work
        self.guard = guard
        self.cli = [str(Path(sys.executable).with_name("guardproxy"))]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
        env.pop("KUBECONFIG", None)
        env["HOME"] = str(work)
        self.env = env
        self.hosts = write_hosts(work / "hosts")

    def argv(self, mode: str, command: list[str]) -> list[str]:
        enforce = {
            "cooperative": [],
            "rootless": ["--enforce", "--enforce-mode", "rootless"],
            "root": ["--enforce", "--enforce-mode", "root"],
        }[mode]
        if mode == "root" and self.guard is not None:
            enforce += ["--guard-user", self.guard.name]
        argv = [*self.cli, "run", *enforce, "--data-dir", str(self.work / f"data-{mode}"),
                "--policies", str(ROOT / "policies"), "--", *command]  # fmt: skip
        if os.geteuid() != 0:
            return argv  # no root mode, and nothing needs a name here
        guard = self.guard if mode == "root" else None
        wrapped: list[str] = in_test_namespace(
            argv, hosts=self.hosts, guard=guard, reachable=[self.work]
        )
        return wrapped

    def run(self, mode: str, command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(mode, command), env=self.env, cwd=self.work,
                              capture_output=True, text=True, timeout=900,
                              stdin=subprocess.DEVNULL, check=False)  # fmt: skip


def _guard_user() -> Generator[GuardUser | None]:
    if os.geteuid() != 0:
        yield None
        return
    yield from make_guard_user()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="runs per mode (interleaved)")
    args = parser.parse_args()
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = upstream.server_address[1]
    path = "/v1.43/volumes/x"
    loopback, by_name = f"http://127.0.0.1:{port}{path}", f"http://{UPSTREAM_NAME}:{port}{path}"
    users = _guard_user()
    guard = next(users)
    modes = {
        "cooperative": ("cooperative", "proxied", loopback),
        "rootless, proxy-aware": ("rootless", "proxied", loopback),
        "rootless, captured": ("rootless", "captured", loopback),
        "root, proxy-aware": ("root", "proxied", loopback),
        "root, captured": ("root", "captured", by_name),  # its own 127.0.0.1 is its own
    }
    if guard is None:
        print("not root: the root-mode rows are skipped", file=sys.stderr)
        modes = {k: v for k, v in modes.items() if v[0] != "root"}
    times: dict[str, list[float]] = {name: [] for name in modes}
    startup: dict[str, list[float]] = {m: [] for m in dict.fromkeys(v[0] for v in modes.values())}
    try:
        with tempfile.TemporaryDirectory(prefix="enforce-bench-") as tmp:
            work = Path(tmp)
            work.chmod(0o755)  # the guard user's way to its data directory
            runner = Runner(work, guard)
            client = work / "client.py"
            client.write_text(CLIENT)
            for _ in range(args.rounds):
                for name, (mode, how, url) in modes.items():
                    done = runner.run(mode, [sys.executable, str(client), url,
                                             str(args.requests), how])  # fmt: skip
                    lines = [x for x in done.stdout.splitlines() if x.startswith("TIMES ")]
                    if done.returncode != 0 or not lines:
                        print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                        return 1
                    times[name] += json.loads(lines[0].removeprefix("TIMES "))
                for mode, taken in startup.items():
                    started = time.perf_counter()
                    done = runner.run(mode, ["true"])
                    taken.append(time.perf_counter() - started)
                    assert done.returncode == 0, done.stderr[-2000:]
    finally:
        upstream.shutdown()
        users.close()  # the throwaway guard user is removed
    print(f"allowed reads, one connection each, {args.requests} x {args.rounds} per mode "
          f"(ms per request)")  # fmt: skip
    print(f"{'mode':<24}{'p50':>8}{'p90':>8}{'p99':>8}{'mean':>8}{'vs coop p50':>13}")
    reference = statistics.median(times["cooperative"])
    for name, values in times.items():
        p50 = statistics.median(values)
        print(f"{name:<24}{p50 * 1e3:8.2f}{_percentile(values, 0.9) * 1e3:8.2f}"
              f"{_percentile(values, 0.99) * 1e3:8.2f}{statistics.fmean(values) * 1e3:8.2f}"
              f"{p50 / reference:12.2f}x")  # fmt: skip
    for mode, values in startup.items():
        print(f"session start-up to the end of `true`, {mode}: "
              f"median {statistics.median(values) * 1e3:.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

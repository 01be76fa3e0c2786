"""Build an enforced session's sandbox: its run directory, bridge and bwrap command.

Layout (the agent's view):

- the filesystem as the user sees it, read-write, except guardproxy's data directory
  (and a store outside it), which is an empty tmpfs, and the policy directory and
  guardproxy's own code, which are read-only (an agent that rewrote either would
  unguard the next session);
- a fresh ``/dev`` and ``/proc`` (its own PID namespace: no host process is visible);
- the run directory (read-only): the guard's CA *certificate* (never the key), the
  CA bundle, the session kubeconfig, the seccomp program, the helper's settings and
  the bridge socket; ``/etc/resolv.conf`` points at the helper's DNS stub;
- a network namespace with loopback only.

The outer sandbox runs the helper as root of its own user namespace (it configures
that namespace's routes and nftables rules); the helper starts the agent in a nested
sandbox without capabilities, in its own PID namespace, under the seccomp filter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from guardproxy.sandbox.bridge import HostBridge
from guardproxy.sandbox.preflight import Tools
from guardproxy.sandbox.seccomp import build_filter
from guardproxy.sandbox.settings import HelperConfig

PROXY_PORT = 3128
"""The in-sandbox proxy listener (``HTTP(S)_PROXY`` inside point to it)."""
CAPTURE_PORT = 3129
"""Where the sandbox's nftables rules redirect every other TCP connection."""
RESOLV_CONF = "nameserver 127.0.0.1\noptions ndots:0\n"


@dataclass
class SandboxSpec:
    """What the sandbox hides, keeps read-only and runs."""

    tools: Tools
    run_dir: Path
    command: list[str]
    session_id: str
    token: str
    proxy_host: str
    proxy_port: int
    hidden: list[Path] = field(default_factory=list)
    read_only: list[Path] = field(default_factory=list)

    @property
    def bridge_path(self) -> Path:
        return self.run_dir / "bridge.sock"


def create_run_dir() -> Path:
    """A private directory for the session's sandbox files (outside the data directory,
    which the sandbox hides)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    root = base if base and os.access(base, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="guardproxy-enforce-", dir=root))
    os.chmod(path, 0o700)
    return path


def inner_proxy_url(session_id: str, token: str) -> str:
    from guardproxy.session.environment import proxy_url  # noqa: PLC0415

    return proxy_url("127.0.0.1", PROXY_PORT, session_id, token)


def guardproxy_code() -> list[Path]:
    """guardproxy's own code and the environment it runs from: read-only inside."""
    package = Path(__file__).resolve().parent.parent
    paths = [package, Path(sys.prefix).resolve()]
    return list(dict.fromkeys(paths))


def _existing(paths: Iterable[Path]) -> list[Path]:
    seen: dict[Path, None] = {}
    for path in paths:
        resolved = path.resolve()
        if resolved.exists():
            seen[resolved] = None
    return list(seen)


def _resolv_conf_target() -> Path | None:
    path = Path("/etc/resolv.conf")
    if not path.exists():
        return None  # glibc then asks 127.0.0.1:53, the stub
    return path.resolve()


def sandbox_command(spec: SandboxSpec, helper_config: Path) -> list[str]:
    argv = [
        spec.tools.bwrap,
        "--unshare-user", "--uid", "0", "--gid", "0",
        "--unshare-net", "--unshare-pid", "--unshare-ipc",
        "--die-with-parent",
        "--bind", "/", "/",
        "--dev", "/dev",
    ]  # fmt: skip
    # no --proc here: the agent's nested sandbox mounts its own, which the kernel only
    # allows over a proc with no covered parts (bwrap's --proc covers some when root)
    hidden = _existing(spec.hidden)
    directories = [p for p in hidden if p.is_dir()]
    for path in hidden:
        if path.is_dir():
            argv += ["--tmpfs", str(path)]
        elif not any(path.is_relative_to(d) for d in directories):
            argv += ["--ro-bind", "/dev/null", str(path)]
    for path in _existing(spec.read_only):
        argv += ["--ro-bind", str(path), str(path)]
    argv += ["--ro-bind", str(spec.run_dir), str(spec.run_dir)]
    resolv = _resolv_conf_target()
    if resolv is not None:
        argv += ["--ro-bind", str(spec.run_dir / "resolv.conf"), str(resolv)]
    argv += ["--cap-add", "ALL", "--", sys.executable, "-m", "guardproxy.sandbox.helper",
             str(helper_config)]  # fmt: skip
    return argv


def sandbox_environment(
    base: dict[str, str], session: dict[str, str], hidden: list[Path]
) -> dict[str, str]:
    """The user's environment with the session's variables, less anything that names a
    hidden path or configures guardproxy itself (its data directory, store, token)."""
    hidden_text = [str(p) for p in hidden] + [str(p.resolve()) for p in hidden]
    kept = {
        name: value
        for name, value in base.items()
        if not name.startswith("GUARDPROXY_") and not any(h in value for h in hidden_text)
    }
    return {**kept, **session}


@contextlib.contextmanager
def running_sandbox(spec: SandboxSpec) -> Iterator[list[str]]:
    """Write the sandbox's files, serve the bridge; yield the bwrap command to run."""
    run_dir = spec.run_dir
    (run_dir / "resolv.conf").write_text(RESOLV_CONF, encoding="ascii")
    seccomp = build_filter(run_dir / "seccomp.bpf")
    config = HelperConfig(
        bridge=str(spec.bridge_path),
        credential=f"{spec.session_id}:{spec.token}",
        proxy_port=PROXY_PORT,
        capture_port=CAPTURE_PORT,
        uid=os.getuid(),
        gid=os.getgid(),
        seccomp=str(seccomp),
        command=spec.command,
        bwrap=spec.tools.bwrap,
        nft=spec.tools.nft,
        ip=spec.tools.ip,
    )
    config_path = run_dir / "helper.json"
    config.dump(config_path)
    bridge = HostBridge(spec.bridge_path, spec.proxy_host, spec.proxy_port).start()
    try:
        yield sandbox_command(spec, config_path)
    finally:
        bridge.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


__all__ = [
    "CAPTURE_PORT",
    "PROXY_PORT",
    "SandboxSpec",
    "create_run_dir",
    "guardproxy_code",
    "inner_proxy_url",
    "running_sandbox",
    "sandbox_command",
    "sandbox_environment",
]

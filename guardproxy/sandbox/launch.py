"""Build an enforced session's sandbox: its run directory, bridge and bwrap command.

Layout (the agent's view):

- the filesystem as the user sees it, read-write, except guardproxy's data directory
  (and a store outside it), which is an empty tmpfs, and the policy directory and
  guardproxy's own code, which are read-only (an agent that rewrote either would
  unguard the next session);
- a fresh ``/dev`` and ``/proc`` (its own PID namespace: no host process is visible);
- the run directory (read-only): the guard's CA *certificate* (never the key), the
  CA bundle, the session kubeconfig, the seccomp program, the helper's settings and
  the bridge socket; ``/etc/resolv.conf`` points at the sandbox's DNS (the helper's
  stub, or the root-mode guard's), and ``/etc/hosts`` names only this machine, so
  every other name is resolved through guardproxy;
- rootless: a network namespace with loopback only. The outer sandbox runs the helper
  as root of its own user namespace (it configures that namespace's routes and
  nftables rules); the helper starts the agent in a nested sandbox without
  capabilities, in its own PID namespace, under the seccomp filter.
- root mode (network.py): the session's network namespace, whose only link is a veth
  pair to the guard; the agent's sandbox (the same filesystem view, no capabilities,
  its own PID namespace, the seccomp filter) is started in it directly.

In both, the agent runs under the relay (relay.py), which passes on the signals
``guardproxy run`` receives.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from guardproxy.sandbox.account import Account, blocking_directory
from guardproxy.sandbox.bridge import HostBridge
from guardproxy.sandbox.preflight import Tools
from guardproxy.sandbox.seccomp import build_filter
from guardproxy.sandbox.settings import HelperConfig

PROXY_PORT = 3128
"""The in-sandbox proxy listener (``HTTP(S)_PROXY`` inside point to it)."""
CAPTURE_PORT = 3129
"""Where the sandbox's nftables rules redirect every other TCP connection."""
RELAY = Path(__file__).resolve().with_name("relay.py")


def relay_command() -> list[str]:
    """The relay's command line up to its arguments (standard library only, no site)."""
    return [sys.executable, "-I", "-S", str(RELAY)]


def resolv_conf(nameserver: str) -> str:
    return f"nameserver {nameserver}\noptions ndots:0\n"


def hosts_file() -> str:
    """Only this machine's own names: every other name goes to the sandbox's DNS, which
    hands out an address standing for the name, so the guard sees the name itself."""
    name = socket.gethostname()
    own = f" {name}" if name and name != "localhost" else ""
    return f"127.0.0.1 localhost{own}\n::1 localhost ip6-localhost ip6-loopback\n"


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
    nameserver: str = "127.0.0.1"
    """The sandbox's DNS: the helper's stub (rootless) or the guard's (root mode)."""
    agent_uid: int | None = None
    """Root mode: who the agent is (the user who ran sudo, or root without capabilities
    in a user namespace); rootless: this process's user."""
    agent_gid: int | None = None
    allow_unix_sockets: bool = False
    """Let the agent use unix sockets, with this machine's own covered (host_sockets)."""

    @property
    def bridge_path(self) -> Path:
        return self.run_dir / "bridge.sock"


@dataclass(frozen=True)
class SandboxLaunch:
    """The bwrap command line and what to start it with."""

    argv: list[str]
    pass_fds: tuple[int, ...] = ()
    netns: Path | None = None
    """Root mode: the network namespace to start it in."""
    uid: int | None = None
    """Root mode: the user to start it as (None: as this process)."""
    gid: int | None = None


def create_run_dir(*, for_another_user: bool = False) -> Path:
    """A private directory for the session's sandbox files (outside the data directory,
    which the sandbox hides). ``for_another_user``: root mode's agent may be another
    user, who must be able to reach it (the system's temporary directory, not root's
    runtime directory); it is given to that user before the sandbox starts."""
    base = None if for_another_user else os.environ.get("XDG_RUNTIME_DIR")
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


def _etc_target(name: str) -> Path | None:
    """Where /etc/NAME really is (a symlink, e.g. to systemd-resolved's, is followed:
    bwrap binds over the file, not the link); None if it does not exist."""
    path = Path("/etc", name)
    if not path.exists():
        return None  # glibc then asks 127.0.0.1:53 and knows localhost by itself
    return path.resolve()


UNIX_SOCKETS = Path("/proc/net/unix")


def host_sockets(hidden: Iterable[Path] = (), agent: Account | None = None) -> list[str]:
    """Every pathname unix socket this machine listens on now (``/proc/net/unix`` of
    this network namespace) that ``agent`` (default: this process's user) can reach,
    outside ``hidden``: a sandbox whose agent may use unix sockets covers each, so none
    leads out of it (a D-Bus session bus starts programs outside, docker.sock runs
    containers, tmux types into terminals). One created on this machine after the
    sandbox starts is not covered: --allow-unix-sockets says so."""
    if agent is None:
        agent = Account("", os.getuid(), os.getgid(), os.getgroups())
    try:
        lines = UNIX_SOCKETS.read_text(encoding="utf-8", errors="replace").splitlines()[1:]
    except OSError:
        return []
    covered = [p.resolve() for p in hidden]
    found: dict[str, None] = {}
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) < 8 or not fields[7].startswith("/"):
            continue  # unbound or abstract (abstract ones stay in their network namespace)
        path = Path(fields[7])
        try:
            if not stat.S_ISSOCK(path.lstat().st_mode):
                continue
        except OSError:
            continue
        if any(path.is_relative_to(h) for h in covered):
            continue
        if blocking_directory(path.parent, agent) is None:  # else out of its reach anyway
            found[str(path)] = None
    return list(found)


def _file_binds(spec: SandboxSpec) -> list[str]:
    """What both modes hide, keep read-only and put in place of /etc files."""
    argv: list[str] = []
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
    for name in ("resolv.conf", "hosts"):
        target = _etc_target(name)
        if target is not None:
            argv += ["--ro-bind", str(spec.run_dir / name), str(target)]
    return argv


def sandbox_command(spec: SandboxSpec, helper_config: Path) -> list[str]:
    """Rootless: the outer sandbox, which runs the helper."""
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
    argv += _file_binds(spec)
    argv += ["--cap-add", "ALL", "--", sys.executable, "-m", "guardproxy.sandbox.helper",
             str(helper_config)]  # fmt: skip
    return argv


def root_sandbox_command(spec: SandboxSpec, seccomp_fd: int, signal_fd: int) -> list[str]:
    """Root mode: the agent's sandbox, started in the session's network namespace as
    the agent's user: its own user and PID namespaces, no capabilities, the filter."""
    uid = spec.agent_uid if spec.agent_uid is not None else os.getuid()
    gid = spec.agent_gid if spec.agent_gid is not None else os.getgid()
    argv = [
        spec.tools.bwrap,
        "--unshare-user", "--uid", str(uid), "--gid", str(gid),
        "--unshare-pid", "--unshare-ipc",
        "--die-with-parent",
        "--bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
    ]  # fmt: skip
    argv += _file_binds(spec)
    if spec.allow_unix_sockets:
        agent = Account("agent", uid, gid, [gid])
        for path in host_sockets(spec.hidden, agent):
            argv += ["--ro-bind", "/dev/null", path]
    argv += ["--cap-drop", "ALL", "--seccomp", str(seccomp_fd), "--",
             *relay_command(), str(signal_fd), "--", *spec.command]  # fmt: skip
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


def _write_session_files(spec: SandboxSpec) -> Path:
    run_dir = spec.run_dir
    (run_dir / "resolv.conf").write_text(resolv_conf(spec.nameserver), encoding="ascii")
    (run_dir / "hosts").write_text(hosts_file(), encoding="utf-8")
    return build_filter(run_dir / "seccomp.bpf", allow_unix=spec.allow_unix_sockets)


@contextlib.contextmanager
def running_sandbox(spec: SandboxSpec, signal_fd: int) -> Iterator[SandboxLaunch]:
    """Rootless: write the sandbox's files, serve the bridge; yield the bwrap command.

    ``signal_fd``: the read end of ``run``'s signal pipe, for the relay."""
    run_dir = spec.run_dir
    seccomp = _write_session_files(spec)
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
        signal_fd=signal_fd,
        relay=relay_command(),
        # the bridge too: the helper's way to the guard, not the agent's
        covered=[*host_sockets(spec.hidden), str(spec.bridge_path)]
        if spec.allow_unix_sockets
        else [],
    )
    config_path = run_dir / "helper.json"
    config.dump(config_path)
    bridge = HostBridge(spec.bridge_path, spec.proxy_host, spec.proxy_port).start()
    try:
        yield SandboxLaunch(sandbox_command(spec, config_path), pass_fds=(signal_fd,))
    finally:
        bridge.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@contextlib.contextmanager
def running_root_sandbox(spec: SandboxSpec, signal_fd: int, netns: Path) -> Iterator[SandboxLaunch]:
    """Root mode: write the sandbox's files (readable by the agent's user); yield the
    bwrap command to start in ``netns``."""
    run_dir = spec.run_dir
    seccomp = _write_session_files(spec)
    if spec.agent_uid is not None and spec.agent_uid != os.getuid():
        gid = spec.agent_gid if spec.agent_gid is not None else spec.agent_uid
        for directory, _, files in os.walk(run_dir):
            for path in [directory, *(os.path.join(directory, f) for f in files)]:
                os.chown(path, spec.agent_uid, gid, follow_symlinks=False)
    seccomp_fd = os.open(seccomp, os.O_RDONLY)
    try:
        yield SandboxLaunch(
            root_sandbox_command(spec, seccomp_fd, signal_fd),
            pass_fds=(seccomp_fd, signal_fd),
            netns=netns,
            uid=spec.agent_uid,
            gid=spec.agent_gid,
        )
    finally:
        os.close(seccomp_fd)
        shutil.rmtree(run_dir, ignore_errors=True)


__all__ = [
    "CAPTURE_PORT",
    "PROXY_PORT",
    "SandboxLaunch",
    "SandboxSpec",
    "create_run_dir",
    "guardproxy_code",
    "hosts_file",
    "inner_proxy_url",
    "relay_command",
    "resolv_conf",
    "root_sandbox_command",
    "running_root_sandbox",
    "running_sandbox",
    "sandbox_command",
    "sandbox_environment",
]

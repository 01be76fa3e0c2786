"""Can this machine run an enforced session? One line with the fix when it cannot.

The sandbox needs bubblewrap, unprivileged user namespaces (some kernels and Ubuntu's
AppArmor restrict them), nftables and iproute2 inside the sandbox's own network
namespace, and libseccomp. The last check starts a throwaway sandbox that installs an
nftables table, so whatever the individual checks miss (a kernel without nf_tables,
a seccomp or LSM policy that refuses namespaces) is caught before the agent starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
COOPERATIVE = "or run without --enforce (cooperative mode, which the agent can bypass)"
PROBE_TIMEOUT = 20.0
_PROBE_RULES = "add table inet guardproxy_probe"


class EnforceUnavailable(Exception):  # noqa: N818 - read as a sentence
    """Enforced mode cannot run here; the message is one line: what, and the fix."""


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the programs the sandbox runs."""

    bwrap: str
    nft: str
    ip: str


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "")
    return shutil.which(name, path=os.pathsep.join([path, *SBIN]))


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text(encoding="ascii").strip()
    except OSError:
        return None


def find_tools() -> Tools:
    bwrap = _which("bwrap")
    if bwrap is None:
        raise EnforceUnavailable(
            f"--enforce needs bubblewrap, which is not installed: apt-get install bubblewrap "
            f"(dnf install bubblewrap), {COOPERATIVE}"
        )
    nft = _which("nft")
    if nft is None:
        raise EnforceUnavailable(
            f"--enforce needs nftables (nft) to capture the sandbox's connections: "
            f"apt-get install nftables, {COOPERATIVE}"
        )
    ip = _which("ip")
    if ip is None:
        raise EnforceUnavailable(
            f"--enforce needs iproute2 (ip) to route the sandbox's connections: "
            f"apt-get install iproute2, {COOPERATIVE}"
        )
    return Tools(bwrap=bwrap, nft=nft, ip=ip)


def _namespace_settings(*, unprivileged: bool | None = None) -> None:
    """``unprivileged``: whether bwrap will run without root (default: as this process)."""
    if unprivileged is None:
        unprivileged = os.geteuid() != 0
    if _sysctl("kernel.unprivileged_userns_clone") == "0" and unprivileged:
        raise EnforceUnavailable(
            "--enforce needs unprivileged user namespaces, which this kernel disables: "
            f"sysctl -w kernel.unprivileged_userns_clone=1, {COOPERATIVE}"
        )
    if _sysctl("user.max_user_namespaces") == "0":
        raise EnforceUnavailable(
            "--enforce needs user namespaces, which this machine disables "
            f"(user.max_user_namespaces=0): sysctl -w user.max_user_namespaces=15000, "
            f"{COOPERATIVE}"
        )
    if _sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1" and unprivileged:
        raise EnforceUnavailable(
            "--enforce needs unprivileged user namespaces, which AppArmor restricts here "
            "(kernel.apparmor_restrict_unprivileged_userns=1): sysctl -w "
            "kernel.apparmor_restrict_unprivileged_userns=0, or give bwrap an AppArmor "
            f"profile with 'userns,', {COOPERATIVE}"
        )


def probe(tools: Tools) -> None:
    """Start a throwaway sandbox like the real one and install an nftables table in it."""
    argv = [
        tools.bwrap, "--unshare-user", "--uid", "0", "--gid", "0", "--unshare-net",
        "--unshare-pid", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
        "--cap-add", "ALL", "--", tools.nft, _PROBE_RULES,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise EnforceUnavailable(
            f"--enforce: a test sandbox did not finish in {PROBE_TIMEOUT:.0f}s; {COOPERATIVE}"
        ) from None
    if done.returncode == 0:
        return
    reason = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
    if "RTM_NEWADDR" in reason or "Permission denied" in reason or "not permitted" in reason:
        raise EnforceUnavailable(
            f"--enforce: bubblewrap cannot create a user namespace here ({reason}); on "
            "Ubuntu 24.04: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 or an "
            f"AppArmor profile for bwrap with 'userns,'; {COOPERATIVE}"
        )
    raise EnforceUnavailable(f"--enforce: a test sandbox failed ({reason}); {COOPERATIVE}")


def _seccomp() -> None:
    from guardproxy.sandbox.seccomp import SeccompUnavailable, load_library  # noqa: PLC0415

    try:
        load_library()
    except SeccompUnavailable as error:
        raise EnforceUnavailable(f"--enforce: {error}, {COOPERATIVE}") from None


def preflight() -> Tools:
    """The tools to use; EnforceUnavailable (one line, with the fix) if the sandbox
    cannot be built here."""
    tools = find_tools()
    _namespace_settings()
    _seccomp()
    probe(tools)
    return tools


ROOT_CAPABILITIES = {
    0: "CAP_CHOWN",
    6: "CAP_SETGID",
    7: "CAP_SETUID",
    12: "CAP_NET_ADMIN",
    21: "CAP_SYS_ADMIN",
}
"""What root mode uses: the data directory handed to the guard user, the guard and the
agent started as their users, the network namespace, veth pair and nftables rules."""
CAP_NET_ADMIN = 12
MODES = ("auto", "root", "rootless")


def effective_capabilities() -> int:
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def enforce_mode(requested: str, *, attached: bool) -> str:
    """``root`` or ``rootless``. ``auto``: root mode when this process may administer
    the network (root, or ``CAP_NET_ADMIN``) and starts its own guard."""
    if requested == "rootless":
        return "rootless"
    capable = bool(effective_capabilities() >> CAP_NET_ADMIN & 1)
    if requested == "auto":
        return "root" if capable and not attached else "rootless"
    if attached:
        raise EnforceUnavailable(
            "--enforce-mode root starts its own guard, run as a dedicated user; it cannot "
            "attach to a running one (--proxy): drop --proxy, or use --enforce-mode rootless"
        )
    return "root"


def root_preflight(*, agent_is_root: bool) -> Tools:
    """Root mode's tools; EnforceUnavailable (one line) when a capability, a program or
    libseccomp is missing. ``agent_is_root``: else bwrap runs as the agent's user and
    needs unprivileged user namespaces."""
    capabilities = effective_capabilities()
    missing = [name for bit, name in ROOT_CAPABILITIES.items() if not capabilities >> bit & 1]
    if missing:
        raise EnforceUnavailable(
            f"--enforce (root mode) needs root or {', '.join(missing)}: run it with sudo, "
            "or use --enforce-mode rootless"
        )
    tools = find_tools()
    _namespace_settings(unprivileged=not agent_is_root or os.geteuid() != 0)
    _seccomp()
    return tools


__all__ = [
    "MODES",
    "EnforceUnavailable",
    "Tools",
    "effective_capabilities",
    "enforce_mode",
    "find_tools",
    "preflight",
    "probe",
    "root_preflight",
]

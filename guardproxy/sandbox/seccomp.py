"""The seccomp filter of an enforced session's agent, compiled by libseccomp.

The agent's network namespace has loopback only, but the filesystem it sees holds
host unix sockets (D-Bus, ``docker.sock``, an ssh-agent) and the kernel offers other
ways out that no namespace covers (``AF_VSOCK`` reaches a VM's host). So the agent
may create sockets of the families the sandbox routes through the guard (IPv4, IPv6)
and netlink (which glibc and Node use to list interfaces), nothing else; ``socketpair``
stays allowed (an unconnected pair reaches nothing, and Node's child processes need
one). ``io_uring`` is denied (its operations bypass these syscall checks), as is the
``TIOCSTI``/``TIOCLINUX`` ioctl (typing into the user's terminal outside the sandbox).

The program is built by libseccomp (through pyseccomp's ctypes binding of the system
``libseccomp.so.2``) and exported as BPF for ``bwrap --seccomp FD``. Other system-call
ABIs (i386's ``int 0x80``, whose ``socketcall`` carries the family in memory where no
filter can read it) are killed by libseccomp's bad-architecture action.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Any

ALLOWED_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK})
HIGHEST_FAMILY = 64
"""Families are below 46 today (AF_MAX); every number from here up is denied too."""
_LOW32 = 0xFFFFFFFF
TIOCSTI = 0x5412
TIOCLINUX = 0x541C


class SeccompUnavailable(Exception):  # noqa: N818 - read as a sentence
    """libseccomp cannot be loaded; the message says what to install."""


def load_library() -> Any:
    """pyseccomp, which loads the system libseccomp; SeccompUnavailable if it cannot."""
    try:
        import pyseccomp  # noqa: PLC0415 - loads libseccomp.so: only for --enforce
    except (ImportError, OSError, RuntimeError) as error:
        raise SeccompUnavailable(
            f"libseccomp cannot be loaded ({error}); install it: apt-get install libseccomp2"
        ) from error
    return pyseccomp


def build_filter(out: Path, *, allow_unix: bool = False) -> Path:
    """Write the agent's filter as a BPF program to ``out`` (for ``bwrap --seccomp``).

    ``allow_unix`` (``run --enforce --allow-unix-sockets``): unix sockets too, for
    tools that talk to their own helpers over one (terraform and its providers); the
    sandbox then covers every unix socket this machine listens on (launch.py)."""
    seccomp = load_library()
    denied = seccomp.ERRNO(errno.EPERM)
    arg, masked_eq, ge = seccomp.Arg, seccomp.MASKED_EQ, seccomp.GE
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    allowed = ALLOWED_FAMILIES | ({socket.AF_UNIX} if allow_unix else set())
    # socket(int family, ...): the kernel reads the low 32 bits, so compare those
    for family in range(HIGHEST_FAMILY):
        if family not in allowed:
            rules.add_rule(denied, "socket", arg(0, masked_eq, _LOW32, family))
    rules.add_rule(denied, "socket", arg(0, ge, HIGHEST_FAMILY))
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        rules.add_rule(seccomp.ERRNO(errno.ENOSYS), name)
    for request in (TIOCSTI, TIOCLINUX):
        rules.add_rule(denied, "ioctl", arg(1, masked_eq, _LOW32, request))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as handle:
        rules.export_bpf(handle)
    return out


__all__ = ["ALLOWED_FAMILIES", "SeccompUnavailable", "build_filter", "load_library"]

"""Enforced sessions: the agent in a sandbox whose only way out is the guard.

``guardproxy run --enforce`` puts the agent in bubblewrap namespaces (user, network,
PID) with guardproxy's data directory hidden, the policy directory read-only and a
seccomp filter; an in-sandbox helper captures every TCP connection and carries it to
the guard over a per-session unix socket (see helper.py, launch.py).

This facade imports nothing heavy: the helper runs from it inside the sandbox.
"""

from guardproxy.sandbox.launch import (
    CAPTURE_PORT,
    PROXY_PORT,
    SandboxSpec,
    create_run_dir,
    guardproxy_code,
    inner_proxy_url,
    running_sandbox,
    sandbox_environment,
)
from guardproxy.sandbox.preflight import EnforceUnavailable, Tools, preflight

__all__ = [
    "CAPTURE_PORT",
    "PROXY_PORT",
    "EnforceUnavailable",
    "SandboxSpec",
    "Tools",
    "create_run_dir",
    "guardproxy_code",
    "inner_proxy_url",
    "preflight",
    "running_sandbox",
    "sandbox_environment",
]

"""What the host tells the in-sandbox helper: a JSON file in the session's run directory."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class HelperConfig:
    """What the host tells the helper (a JSON file in the session's run directory)."""

    bridge: str
    credential: str
    proxy_port: int
    capture_port: int
    uid: int
    gid: int
    seccomp: str
    command: list[str]
    bwrap: str = "bwrap"
    nft: str = "nft"
    ip: str = "ip"
    configure_network: bool = True
    signal_fd: int = -1
    """The read end of ``run``'s signal pipe (relay.py); -1: the agent runs without it."""
    relay: list[str] = field(default_factory=list)
    """The relay's command line up to its arguments (python -I -S relay.py)."""
    covered: list[str] = field(default_factory=list)
    """Unix sockets of this machine the agent's sandbox covers (--allow-unix-sockets)."""

    @classmethod
    def load(cls, path: Path) -> HelperConfig:
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")


__all__ = ["HelperConfig"]

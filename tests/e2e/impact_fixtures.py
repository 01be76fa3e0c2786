"""What impact and safety-step tests share: a bundle that holds every delete and offers a
snapshot, a held request waiting live in a thread, and waiting for a hold's preview."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .guard_fixtures import POLICIES, Guard

HOLD_DELETES = """\
apiVersion: guardproxy.dev/v1
kind: PolicySet
metadata: {name: impact}
spec:
  rules:
    - id: hold-deletes
      decision: hold
      match: {verbs: [delete, destroy]}
      message: "{action.operation} of {action.resource.name} needs approval."
      approval:
        groups: [sre-oncall, senior]
        timeout: 10m
        safetySteps: [{name: snapshot, includeSecrets: %(secrets)s}]
    - id: hold-pushes
      decision: hold
      match: {providers: [git], operations: [push]}
      message: "A push to {action.resource.name} needs approval (it may rewrite history)."
      approval:
        groups: [sre-oncall, senior]
        timeout: 10m
        safetySteps: [{name: snapshot}]
"""


def hold_deletes_bundle(directory: Path, *, secrets: bool = False) -> Path:
    """The shipped bundle settings and two rules: every delete, and every git push,
    waits for one approver, who may choose a snapshot."""
    directory.mkdir(parents=True)
    shutil.copy(POLICIES / "bundle.yaml", directory / "bundle.yaml")
    text = HOLD_DELETES % {"secrets": "true" if secrets else "false"}
    (directory / "impact.yaml").write_text(text, encoding="utf-8")
    return directory


@dataclass
class Live:
    """A client call made in a thread (it waits on its hold); ``result`` or ``error``."""

    thread: threading.Thread
    result: list[Any] = field(default_factory=list)
    error: list[BaseException] = field(default_factory=list)

    def join(self, timeout: float = 60.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the held call did not return"
        if self.error:
            raise self.error[0]
        return self.result[0]


def in_thread(call: Callable[[], Any]) -> Live:
    live = Live(threading.Thread(target=lambda: None, daemon=True))

    def run() -> None:
        try:
            live.result.append(call())
        except BaseException as error:
            live.error.append(error)

    live.thread = threading.Thread(target=run, daemon=True)
    live.thread.start()
    return live


def wait_for_impact(guard: Guard, hold_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The hold once its impact preview is in (known or unknown)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hold = guard.hold(hold_id)
        if hold["impact"]["status"] != "pending":
            return hold
        time.sleep(0.1)
    raise AssertionError(f"no impact for {hold_id} within {timeout} s")


def approver_env(guard: Guard, name: str = "alice") -> dict[str, str]:
    """The CLI's environment as that approver."""
    return {"GUARDPROXY_APPROVER_TOKEN": guard.approver(name).token}

"""GitHub impact previews and the branch backup, through a real guard, against a loopback
GitHub Enterprise API fake (``/api/v3``) that answers only the agent's token: the guard's
reads present the credential the held request carries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .api_fakes import ApiFake
from .guard_fixtures import Guard, GuardSession, StartGuard
from .impact_fixtures import hold_deletes_bundle, in_thread, wait_for_impact

pytestmark = pytest.mark.slow

TOKEN = "ghp_agentToken0000000000000000000000000000"
REPO = "/api/v3/repos/acme/app"


@pytest.fixture
def github() -> Iterator[ApiFake]:
    with ApiFake(TOKEN) as fake:
        fake.get(REPO, {"full_name": "acme/app", "pushed_at": "2025-02-27T10:00:00Z",
                        "archived": False, "private": True, "default_branch": "main"})  # fmt: skip
        fake.get(f"{REPO}/pulls", [{"number": n} for n in (7, 9, 12)])
        fake.get(f"{REPO}/compare/main...feature", {"ahead_by": 2, "commits": [
            {"sha": "a1b2c3d4e5", "commit": {"message": "Add exporter\n\nbody"}},
            {"sha": "f6e7d8c9b0", "commit": {"message": "Fix exporter"}}]})  # fmt: skip
        tip = {"ref": "refs/heads/feature", "object": {"sha": "f6e7d8c9b0" * 4}}
        fake.get(f"{REPO}/git/ref/heads/feature", tip)
        fake.created.add(f"{REPO}/git/refs")
        fake.delete(REPO)
        fake.delete(f"{REPO}/git/refs/heads/feature")
        yield fake


@pytest.fixture
def guard(start_guard: StartGuard, tmp_path: Path) -> Guard:
    return start_guard(policies=hold_deletes_bundle(tmp_path / "policies"), hold_window_seconds=60)


def agent_delete(session: GuardSession, url: str) -> int:
    with httpx.Client(proxy=session.proxy_url, timeout=120) as client:
        return client.delete(url, headers={"Authorization": f"token {TOKEN}"}).status_code


def test_repository_delete_shows_last_push_pull_requests_and_archival(
    guard: Guard, github: ApiFake
) -> None:
    session = guard.session("impact-github")
    live = in_thread(lambda: agent_delete(session, f"{github.url}{REPO}"))
    hold = wait_for_impact(guard, guard.wait_for_pending_hold()["id"])
    impact = hold["impact"]
    assert impact["status"] == "known", impact
    assert impact["impact"]["open_pull_requests"] == 3
    assert impact["impact"]["pushed_at"] == "2025-02-27T10:00:00Z"
    assert impact["summary"] == (
        "last push 2025-02-27T10:00:00Z; 3 open pull requests; not archived; private"
    )
    guard.approver("alice").resolve(hold["id"], approve=False, reason="no")
    live.join()
    assert not [r for r in github.requests if r.method == "DELETE"]


def test_branch_delete_shows_its_commits_and_is_backed_up_before_release(
    guard: Guard, github: ApiFake
) -> None:
    session = guard.session("impact-github-branch")
    live = in_thread(lambda: agent_delete(session, f"{github.url}{REPO}/git/refs/heads/feature"))
    hold = wait_for_impact(guard, guard.wait_for_pending_hold()["id"])
    impact = hold["impact"]
    assert impact["status"] == "known", impact
    assert impact["impact"]["commits_ahead"] == 2
    assert impact["summary"] == (
        "feature: 2 commits not on main (a1b2c3d Add exporter; f6e7d8c Fix exporter)"
    )
    guard.approver("alice").resolve(hold["id"], approve=True, reason="ok", steps=["snapshot"])
    assert live.join() == 204
    [(ref, sha)] = github.refs.items()
    assert ref.startswith("refs/guardproxy/backup/feature/") and sha == "f6e7d8c9b0" * 4
    log = [(r.method, r.path) for r in github.all_requests]
    assert log.index(("POST", f"{REPO}/git/refs")) < log.index(
        ("DELETE", f"{REPO}/git/refs/heads/feature")
    )

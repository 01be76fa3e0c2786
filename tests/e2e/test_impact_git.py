"""Impact previews and backup refs for git pushes, through a real guard, against
``git http-backend`` (tests/e2e/servers.py GitHttpServer).

The served repository has ``main`` (two commits) and ``feature-x`` (one more). Deleting
``feature-x`` or force-pushing it over a rewritten history leaves "Add feature x" on no
branch: the preview must say so. Approved ``--with snapshot``, the old commit is pushed to
``refs/guardproxy/backup/feature-x/<time>`` before the agent's push reaches the server
(the server's request log), and the agent's push then lands.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .guard_fixtures import Guard, GuardSession, StartGuard, describe, run_client
from .impact_fixtures import approver_env, hold_deletes_bundle, in_thread, wait_for_impact
from .servers import GitHttpServer, run_git

pytestmark = pytest.mark.slow


@pytest.fixture
def guard(start_guard: StartGuard, tmp_path: Path) -> Iterator[Guard]:
    yield start_guard(policies=hold_deletes_bundle(tmp_path / "policies"), hold_window_seconds=60)


@pytest.fixture
def clone(git_server: GitHttpServer, git_environ: dict[str, str], tmp_path: Path) -> Path:
    """The agent's clone, made straight from the server (a read)."""
    work = tmp_path / "clone"
    run_git(["clone", "--quiet", git_server.repo_url, str(work)], git_environ)
    run_git(["checkout", "--quiet", "feature-x"], git_environ, cwd=work)
    return work


def agent_git(
    session: GuardSession, env: dict[str, str], work: Path, *args: str
) -> tuple[int, str]:
    """git through the guard, waiting on its hold."""
    proxied = {**env, **session.proxy_env(), "GIT_HTTP_PROXY_AUTHMETHOD": "basic"}
    done = run_client(["git", *args], proxied, cwd=work, timeout=120)
    return done.returncode, done.stdout + done.stderr


def receive_packs(server: GitHttpServer) -> list[bytes]:
    return [r.body for r in server.all_requests if r.path.endswith("/git-receive-pack")]


def test_branch_delete_names_the_commits_it_orphans_and_is_backed_up_first(
    guard: Guard, git_server: GitHttpServer, git_environ: dict[str, str], clone: Path
) -> None:
    old = git_server.branches()["feature-x"]
    session = guard.session("impact-git")
    live = in_thread(
        lambda: agent_git(session, git_environ, clone, "push", "origin", "--delete", "feature-x")
    )
    hold = wait_for_impact(guard, guard.wait_for_pending_hold()["id"])
    impact = hold["impact"]
    assert impact["status"] == "known", impact
    [ref] = impact["impact"]["refs"]
    assert ref["ref"] == "refs/heads/feature-x" and ref["old"] == old
    assert ref["commits_lost"] == 1 and ref["commits"][0].endswith(" Add feature x")
    assert impact["summary"].startswith("feature-x (delete): 1 commit left on no branch")
    assert "feature-x" in git_server.branches()

    done = guard.cli(
        "approve", hold["id"], "--reason", "keep a ref", "--with", "snapshot",
        env=approver_env(guard), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, describe(done)
    code, printed = live.join()
    assert code == 0, printed
    assert "feature-x" not in git_server.branches()
    backups = git_server.git(
        "for-each-ref", "--format=%(refname) %(objectname)", "refs/guardproxy/backup"
    ).split()
    assert len(backups) == 2 and backups[0].startswith("refs/guardproxy/backup/feature-x/")
    assert backups[1] == old
    [step] = guard.hold(hold["id"])["safety_steps"]
    assert step["result"]["refs"] == {backups[0]: old}
    # ground truth: the backup's push reached the server before the agent's delete
    pushes = receive_packs(git_server)
    backup_at = next(n for n, b in enumerate(pushes) if b"refs/guardproxy/backup/" in b)
    delete_at = next(n for n, b in enumerate(pushes) if b"refs/heads/feature-x" in b)
    assert backup_at < delete_at


def test_a_force_push_over_a_rewritten_branch_names_what_it_drops(
    guard: Guard, git_server: GitHttpServer, git_environ: dict[str, str], clone: Path
) -> None:
    run_git(["reset", "--quiet", "--hard", "origin/main"], git_environ, cwd=clone)
    (clone / "other.py").write_text("OTHER = 1\n")
    run_git(["add", "other.py"], git_environ, cwd=clone)
    run_git(["commit", "--quiet", "-m", "Another take"], git_environ, cwd=clone)
    session = guard.session("impact-git-force")
    before = len(receive_packs(git_server))
    live = in_thread(
        lambda: agent_git(session, git_environ, clone, "push", "--force", "origin", "feature-x")
    )
    hold = wait_for_impact(guard, guard.wait_for_pending_hold()["id"])
    impact = hold["impact"]
    assert impact["status"] == "known", impact
    [ref] = impact["impact"]["refs"]
    assert ref["operation"] == "update" and ref["new_tip_known"] is True
    assert ref["commits_lost"] == 1 and ref["commits"][0].endswith(" Add feature x")
    guard.approver("alice").resolve(hold["id"], approve=False, reason="keep the history")
    code, printed = live.join()
    assert code != 0, printed
    assert len(receive_packs(git_server)) == before  # nothing forwarded

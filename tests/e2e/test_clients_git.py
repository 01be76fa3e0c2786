"""git under ``guardproxy run``, pushing to a smart-HTTP server (``git http-backend``).

git (libcurl) honours ``http_proxy`` for loopback servers, so the session's proxy
variables are enough.  A push that deletes a branch is held (``github/
hold-branch-delete``: branch deletion in a prod or unknown environment; the repository
is configured as prod); an ordinary push of a new commit is allowed and lands.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .guard_fixtures import (
    describe,
    guarded_run,
    hold_id_in,
    read_decisions,
    without_log_lines,
)
from .servers import GitHttpServer, run_git

pytestmark = pytest.mark.slow

REPOSITORY = "repo"  # what guardproxy calls <server>/repo.git


class GuardedGit:
    """``guardproxy run -- git ARGS`` in a clone of the server's repository."""

    def __init__(self, git_bin: str, env: dict[str, str], work: Path, data_dir: Path) -> None:
        self.git = git_bin
        self.env = env
        self.work = work
        self.data_dir = data_dir

    def __call__(self, *args: str) -> tuple[int, str, str]:
        proc = guarded_run(
            self.data_dir,
            [self.git, *args],
            self.env,
            "--env",
            f"git:repo:{REPOSITORY}=prod",
            cwd=self.work,
        )
        return proc.returncode, proc.stdout, without_log_lines(proc.stderr)


@pytest.fixture
def guarded_git(
    git_bin: str, git_server: GitHttpServer, git_environ: dict[str, str], tmp_path: Path
) -> GuardedGit:
    """A clone made through the guard (fetches are reads: allowed)."""
    data_dir = tmp_path / "guardproxy"
    clone = guarded_run(
        data_dir,
        [git_bin, "clone", "--quiet", git_server.repo_url, str(tmp_path / "clone")],
        git_environ,
    )
    assert clone.returncode == 0, describe(clone)
    git_server.log.clear()
    return GuardedGit(git_bin, git_environ, tmp_path / "clone", data_dir)


def test_git_push_deleting_a_branch_is_held(
    guarded_git: GuardedGit, git_server: GitHttpServer
) -> None:
    before = git_server.branches()
    assert "feature-x" in before

    code, _, printed = guarded_git("push", "origin", "--delete", "feature-x")
    assert code != 0, printed
    # git shows guardproxy's message (side band) and rejects the ref with the hold id
    assert "remote: guardproxy: " in printed and "held for human approval" in printed, printed
    hold_id = hold_id_in(printed)
    assert f"! [remote rejected] feature-x (guardproxy: held for approval ({hold_id}))" in (
        printed
    ), printed
    assert "error: failed to push some refs" in printed
    assert git_server.branches() == before, "the branch must still exist, unchanged"
    assert git_server.log.matching("POST", "/repo.git/git-receive-pack") == []

    pushes = [d for d in read_decisions(guarded_git.data_dir) if d.operation == "push"]
    assert [(d.outcome, d.hold_id, d.verb, d.resource_name) for d in pushes] == [
        ("hold", hold_id, "delete", "refs/heads/feature-x")
    ]
    assert "branch-delete" in pushes[0].risk_tags
    assert "github/hold-branch-delete" in pushes[0].rules
    assert pushes[0].environment == "prod"


def test_git_push_of_a_new_commit_is_allowed_and_lands(
    guarded_git: GuardedGit, git_server: GitHttpServer, git_environ: dict[str, str]
) -> None:
    work = guarded_git.work
    run_git(["checkout", "--quiet", "feature-x"], git_environ, cwd=work)
    (work / "more.py").write_text("MORE = 1\n")
    run_git(["add", "more.py"], git_environ, cwd=work)
    run_git(["commit", "--quiet", "-m", "More feature x"], git_environ, cwd=work)
    head = run_git(["rev-parse", "HEAD"], git_environ, cwd=work).strip()
    assert git_server.branches()["feature-x"] != head

    code, _, printed = guarded_git("push", "origin", "feature-x")
    assert code == 0, printed
    assert "feature-x -> feature-x" in printed
    assert git_server.branches()["feature-x"] == head
    assert git_server.git("cat-file", "-p", f"{head}:more.py") == "MORE = 1\n"
    assert len(git_server.log.matching("POST", "/repo.git/git-receive-pack")) == 1

    pushes = [d for d in read_decisions(guarded_git.data_dir) if d.operation == "push"]
    assert [(d.outcome, d.verb, d.resource_name) for d in pushes] == [
        ("allow", "update", "refs/heads/feature-x")
    ]
    assert pushes[0].upstream_status == 200

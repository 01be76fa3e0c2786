"""git and GitHub: the commits a branch delete or a force push leaves on no branch, a
repository's last push and open pull requests, and the backup ref pushed before a
branch is deleted or overwritten.

git over smart HTTP is read with git itself: the guard fetches the repository into a
private temporary repository (``--filter=tree:0`` where the server allows it, bounded
in time), indexes the pushed pack (``git index-pack --fix-thin``) when the push carries
one, and asks ``git rev-list`` which commits of the old tip no other branch (nor the new
tip) reaches. The backup is ``git push <repo> <old>:refs/guardproxy/backup/<branch>/<time>``.
Credentials reach git through ``GIT_CONFIG_*`` variables (``http.extraHeader``), never
its command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from guardproxy.action import Action
from guardproxy.impact.access import USER_AGENT, Access, HttpClient, NotFound
from guardproxy.impact.model import Budget, Facts, ImpactError, StepContext, plural, stamp
from guardproxy.impact.requests import git_push
from guardproxy.recognise.providers.git.receive import RefUpdate, read_push_options
from guardproxy.recognise.request import HttpRequest

__all__ = ["GITHUB_PREVIEWS", "GITHUB_SNAPSHOTS", "backup_ref", "preview_push"]

BACKUP_PREFIX = "refs/guardproxy/backup/"
SHOWN_COMMITS = 3


class GitRepo:
    """A private temporary repository that talks to the held request's repository."""

    def __init__(self, access: Access, request: HttpRequest, budget: Budget, work: Path) -> None:
        path = request.path_only
        for suffix in ("/git-receive-pack", "/info/refs"):
            path = path.removesuffix(suffix)
        self.url = access.origin.url + path
        self.budget = budget
        self.dir = work / "repo.git"
        headers, _ = access.auth_for(request)
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
        env.update(
            HOME=str(work),
            GIT_CONFIG_NOSYSTEM="1",
            GIT_TERMINAL_PROMPT="0",
            GIT_ASKPASS="/bin/false",
            GIT_DIR=str(self.dir),
        )
        config = [("http.extraHeader", f"{k}: {v}") for k, v in headers.items()]
        config.append(("protocol.version", "2"))
        config.append(("http.userAgent", f"git/{USER_AGENT}"))
        trust = access.trust()
        if trust is not None:
            env["GIT_SSL_CAINFO"] = str(trust)
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for n, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{n}"] = key
            env[f"GIT_CONFIG_VALUE_{n}"] = value
        self.env = env
        self.run("init", "--quiet", "--bare", str(self.dir))

    def run(self, *args: str, stdin: bytes = b"", ok: tuple[int, ...] = (0,)) -> str:
        timeout = self.budget.call()
        try:
            done = subprocess.run(
                ["git", *args],
                input=stdin,
                capture_output=True,
                timeout=timeout,
                env=self.env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ImpactError(f"git {args[0]} did not finish in time") from None
        except OSError as error:
            raise ImpactError(f"cannot run git: {error.strerror}") from None
        if done.returncode not in ok:
            why = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise ImpactError(f"git {args[0]} failed: {(why[-1] if why else '')[:200]}")
        return done.stdout.decode("utf-8", "replace")

    def fetch_branches(self) -> dict[str, str]:
        """Every branch of the repository: name -> commit."""
        self.run(
            "fetch",
            "--quiet",
            "--no-tags",
            "--filter=tree:0",
            self.url,
            "+refs/heads/*:refs/heads/*",
        )
        out = self.run("for-each-ref", "--format=%(refname) %(objectname)", "refs/heads")
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def exists(self, commit: str) -> bool:
        try:
            self.run("cat-file", "-e", f"{commit}^{{commit}}")
        except ImpactError:
            return False
        return True

    def index_pack(self, pack: bytes) -> None:
        self.run("index-pack", "--stdin", "--fix-thin", stdin=pack)

    def lost(self, old: str, keep: list[str]) -> tuple[int, list[str]]:
        """How many commits of ``old`` none of ``keep`` reaches, and the first few."""
        count = int(self.run("rev-list", "--count", old, "--not", *keep).strip() or 0)
        shown = self.run("log", "--format=%h %s", f"-n{SHOWN_COMMITS}", old, "--not", *keep)
        return count, [line for line in shown.splitlines() if line]


def _pack(request: HttpRequest) -> bytes:
    """The pack a push carries after its commands (and push options), or b""."""
    commands = git_push(request)
    if commands is None:
        return b""
    start = commands.end
    if commands.requests(b"push-options"):
        _, start = read_push_options(request.body, start)
    pack = request.body[start:]
    return pack if pack.startswith(b"PACK") else b""


def _changed(request: HttpRequest) -> list[RefUpdate]:
    commands = git_push(request)
    if commands is None:
        raise ImpactError("the push's commands do not parse")
    return [u for u in commands.updates if not u.creates and u.ref.startswith("refs/heads/")]


def preview_push(access: Access, request: HttpRequest, budget: Budget, work: Path) -> Facts:
    updates = _changed(request)
    if not updates:
        return Facts("the push deletes or rewrites no branch", {"kind": "git:push", "refs": []})
    repo = GitRepo(access, request, budget, work)
    branches = repo.fetch_branches()
    pack = _pack(request)
    if pack:
        repo.index_pack(pack)
    refs: list[dict[str, Any]] = []
    lines = []
    for update in updates:
        others = [c for ref, c in branches.items() if ref != update.ref]
        keep = [*others]
        new_known = update.deletes or repo.exists(update.new)
        if not update.deletes and new_known:
            keep.append(update.new)
        if not repo.exists(update.old):
            raise ImpactError(
                f"{update.ref}'s old commit {update.old[:12]} is not in the repository"
            )
        count, shown = repo.lost(update.old, keep)
        branch = update.ref.removeprefix("refs/heads/")
        what = "delete" if update.deletes else "update"
        if not new_known:
            lines.append(
                f"{branch}: {plural(count, 'commit')} on no other branch "
                "(the new tip's history is unknown)"
            )
        elif count:
            lines.append(
                f"{branch} ({what}): {plural(count, 'commit')} left on no branch"
                f" ({'; '.join(shown)})"
            )
        else:
            lines.append(f"{branch} ({what}): every commit stays on another branch")
        refs.append(
            {
                "ref": update.ref,
                "old": update.old,
                "new": update.new,
                "operation": what,
                "commits_lost": count,
                "commits": shown,
                "new_tip_known": new_known,
            }
        )
    return Facts("; ".join(lines), {"kind": "git:push", "refs": refs})


def backup_ref(
    access: Access, request: HttpRequest, budget: Budget, work: Path, ctx: StepContext
) -> dict[str, Any]:
    updates = _changed(request)
    if not updates:
        raise ImpactError("the push deletes or rewrites no branch")
    repo = GitRepo(access, request, budget, work)
    repo.fetch_branches()
    pushed: dict[str, str] = {}
    specs = []
    for update in updates:
        if not repo.exists(update.old):
            raise ImpactError(
                f"{update.ref}'s old commit {update.old[:12]} is not in the repository"
            )
        branch = update.ref.removeprefix("refs/heads/")
        backup = f"{BACKUP_PREFIX}{branch}/{stamp(ctx.now)}"
        specs.append(f"{update.old}:{backup}")
        pushed[backup] = update.old
    repo.run("push", "--quiet", "--no-verify", repo.url, *specs)
    return {
        "text": "backup " + ", ".join(f"{ref} at {c[:12]}" for ref, c in pushed.items()),
        "refs": pushed,
    }


def git_work(data_dir: Path) -> tempfile.TemporaryDirectory[str]:
    """A private scratch directory for git, removed afterwards."""
    base = data_dir / "tmp"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix="impact-git-", dir=base)


# -- GitHub's REST API ---------------------------------------------------------------------


def _api_prefix(request: HttpRequest) -> str:
    return "/api/v3" if request.path_only.startswith("/api/v3/") else ""


def _repo_path(request: HttpRequest, action: Action) -> str:
    owner_repo = action.scope.repository or action.resource.name
    owner, _, repo = owner_repo.partition("/")
    if not owner or not repo:
        raise ImpactError("the request names no repository")
    return f"{_api_prefix(request)}/repos/{quote(owner, safe='')}/{quote(repo, safe='')}"


def preview_repository(client: HttpClient, request: HttpRequest, action: Action) -> Facts:
    base = _repo_path(request, action)
    repo = _repository(client.get_json(base))
    pulls = client.get_json(f"{base}/pulls?state=open&per_page=100")
    if not isinstance(pulls, list):
        raise ImpactError("GitHub did not answer a list of pull requests")
    count = len(pulls)
    archived = bool(repo.get("archived"))
    pushed = str(repo.get("pushed_at") or "")
    return Facts(
        f"last push {pushed or 'never'}; "
        f"{plural(count, 'open pull request', at_least=count >= 100)}"
        f"; {'archived' if archived else 'not archived'}"
        + ("; private" if repo.get("private") else ""),
        {
            "kind": "github:repository",
            "repository": repo.get("full_name", action.resource.name),
            "pushed_at": pushed,
            "open_pull_requests": count,
            "archived": archived,
            "default_branch": repo.get("default_branch", ""),
            "private": bool(repo.get("private")),
        },
    )


def preview_branch(client: HttpClient, request: HttpRequest, action: Action) -> Facts:
    base = _repo_path(request, action)
    branch = action.resource.name.removeprefix("refs/heads/")
    repo = _repository(client.get_json(base))
    default = str(repo.get("default_branch") or "main")
    if branch == default:
        return Facts(
            f"{branch} is the default branch",
            {"kind": "github:branch", "branch": branch, "default_branch": True},
        )
    compare = client.get_json(f"{base}/compare/{quote(default)}...{quote(branch)}")
    if not isinstance(compare, dict) or "ahead_by" not in compare:
        raise ImpactError("GitHub did not answer a comparison")
    ahead = int(compare.get("ahead_by") or 0)
    commits = [
        f"{str(c.get('sha', ''))[:7]} {_subject(c)}"
        for c in (compare.get("commits") or [])[-SHOWN_COMMITS:]
        if isinstance(c, dict)
    ]
    return Facts(
        f"{branch}: {plural(ahead, 'commit')} not on {default}"
        + (f" ({'; '.join(commits)})" if commits else ""),
        {
            "kind": "github:branch",
            "branch": branch,
            "default_branch": False,
            "compared_with": default,
            "commits_ahead": ahead,
            "commits": commits,
        },
    )


def _repository(answer: Any) -> dict[str, Any]:
    if not isinstance(answer, dict) or "full_name" not in answer:
        raise ImpactError("GitHub did not answer a repository")
    return answer


def _subject(commit: dict[str, Any]) -> str:
    message = str((commit.get("commit") or {}).get("message", ""))
    return message.splitlines()[0] if message else ""


def backup_branch(
    client: HttpClient, request: HttpRequest, action: Action, ctx: StepContext
) -> dict[str, Any]:
    base = _repo_path(request, action)
    ref = action.resource.name
    branch = ref.removeprefix("refs/heads/")
    try:
        current = client.get_json(f"{base}/git/ref/heads/{quote(branch)}")
    except NotFound:
        raise ImpactError(f"branch {branch} does not exist") from None
    sha = str((current.get("object") or {}).get("sha") or "")
    if not sha:
        raise ImpactError(f"branch {branch} has no commit")
    backup = f"{BACKUP_PREFIX}{branch}/{stamp(ctx.now)}"
    status, _ = client.request(
        "POST",
        f"{base}/git/refs",
        body=json.dumps({"ref": backup, "sha": sha}).encode(),
        headers={"Content-Type": "application/json"},
    )
    if status != 201:
        raise ImpactError(f"creating {backup} answered {status}")
    return {"text": f"backup {backup} at {sha[:12]}", "refs": {backup: sha}}


GITHUB_PREVIEWS: dict[str, Callable[[HttpClient, HttpRequest, Action], Facts]] = {
    "repos/delete": preview_repository,
    "git/delete-ref": preview_branch,
}
GITHUB_SNAPSHOTS = {"git/delete-ref": backup_branch}

"""GitHub and git over HTTPS brokered: the session has a placeholder GH_TOKEN and a git
credential helper handing git the placeholder; the guard swaps in the user's real token
for the configured GitHub hosts. The fake GitHub (tests/e2e/token_fakes.py) answers only
the real token, for REST, GraphQL and smart-HTTP git (a real ``git http-backend``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .broker_fixtures import REAL_GITHUB, User, brokered_run, leaked, make_user, write_config
from .conftest import require_binary
from .guard_fixtures import describe, read_decisions
from .servers import GIT_IDENTITY
from .token_fakes import GithubServer, bearer_of

pytestmark = pytest.mark.slow


@pytest.fixture
def github(tmp_path: Path) -> Iterator[GithubServer]:
    require_binary("git")
    with GithubServer(tmp_path / "github", REAL_GITHUB) as server:
        yield server
        assert not server.handler_errors, server.handler_errors


@pytest.fixture
def user(tmp_path: Path, github: GithubServer) -> User:
    found = make_user(tmp_path / "home", {"GH_TOKEN": REAL_GITHUB, **GIT_IDENTITY})
    found.secrets.append(REAL_GITHUB)
    # the user's own git credential store holds the real token too (as `git credential-store`
    # leaves it), for the brokered host and another: the session must not use the first
    found.write(".git-credentials", f"http://x-access-token:{REAL_GITHUB}@127.0.0.1:{github.port}\n"
                f"http://someone:REALotherHostPassword@127.0.0.1\n")  # fmt: skip
    found.write(".gitconfig", "[credential]\n\thelper = store\n")
    return found


def github_config(tmp_path: Path, github: GithubServer) -> Path:
    return write_config(tmp_path / "guardproxy.yaml",
                        {"github": {"hosts": [f"127.0.0.1:{github.port}"]}})  # fmt: skip


SCRIPT = """
set -e
curl -sS --fail -H "Authorization: token $GH_TOKEN" "$URL/user"; echo
curl -sS --fail -H "Authorization: Bearer $GITHUB_TOKEN" -X POST \
    -d '{"query":"{ viewer { login } }"}' "$URL/graphql"; echo
git clone --quiet "$URL/repo.git" "$WORK/clone"
cd "$WORK/clone"
echo change > change.txt && git add change.txt && git commit --quiet -m change
git push --quiet origin HEAD:refs/heads/agent-branch
echo ===
env
"""


def test_rest_graphql_and_git_work_through_the_guard_with_the_real_token_swapped_in(
    github: GithubServer, user: User, tmp_path: Path
) -> None:
    require_binary("curl")
    work = tmp_path / "work"
    work.mkdir()
    env = {"URL": github.url, "WORK": str(work)}
    config = github_config(tmp_path, github)
    proc = brokered_run(user, tmp_path / "guard", config, ["sh", "-c", SCRIPT], env=env)
    assert proc.returncode == 0, describe(proc)
    output, environment = proc.stdout.split("===\n")
    assert '"login": "octocat"' in output and '{"data": {"viewer"' in output
    assert "agent-branch" in github.branches()
    assert leaked(environment, user) == []
    assert "GH_TOKEN=gpb_github_" in environment
    authorized = [r for r in github.requests if bearer_of(r.header("Authorization") or "")]
    assert authorized and {bearer_of(r.header("Authorization") or "") for r in authorized} == {
        REAL_GITHUB
    }, "every authenticated request reached GitHub with the real token, none with the session's"
    decisions = read_decisions(tmp_path / "guard")
    assert {d.provider for d in decisions} >= {"git"}
    # git sends the proxy credential up front (GIT_HTTP_PROXY_AUTHMETHOD): its requests are
    # the session's, not anonymous ones
    assert {d.session_id for d in decisions} == {decisions[0].session_id}
    assert decisions[0].session_id.startswith("s-")


AROUND = """
curl -s -o /dev/null -w '%{http_code} ' --noproxy '*' -H "Authorization: token $GH_TOKEN" \
    "$URL/user"
git -c http.proxy= -c credential.helper= ls-remote "$URL/repo.git" >/dev/null 2>&1 \
    && echo git-accepted || echo git-refused
"""


def test_around_the_guard_the_session_token_fails_authentication(
    github: GithubServer, user: User, tmp_path: Path
) -> None:
    proc = brokered_run(user, tmp_path / "guard", github_config(tmp_path, github),
                        ["sh", "-c", AROUND], env={"URL": github.url,
                                                   "GIT_TERMINAL_PROMPT": "0"})  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.split() == ["401", "git-refused"], describe(proc)


def test_the_git_helper_replaces_the_users_own_helpers_for_brokered_hosts_only(
    github: GithubServer, user: User, tmp_path: Path
) -> None:
    fill = 'printf "protocol=http\\nhost=127.0.0.1%s\\n\\n" "$1" | git credential fill'
    script = f'f() {{ {fill}; }}; f ":$PORT"; echo ===; f ""'
    proc = brokered_run(user, tmp_path / "guard", github_config(tmp_path, github),
                        ["sh", "-c", script], env={"PORT": str(github.port)})  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    brokered, other = proc.stdout.split("===\n")
    assert "password=gpb_github_" in brokered and REAL_GITHUB not in brokered
    # another host keeps the user's own helper (here the store, with its own credential)
    assert "password=REALotherHostPassword" in other

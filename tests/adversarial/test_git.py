"""git pushes the guard must read the way receive-pack does, end to end.

The real proxy with the shipped policies sits in front of ``git http-backend`` (the
e2e git server, whose bare repository is the server-side truth). Crafted pushes that
receive-pack executes but a looser reading misses (ids in upper case, two commands in
one certificate packet, a branch deleted and created again, another HTTP method) must
be decided before anything reaches receive-pack; real ``git push`` runs check that
the stricter reading still lets ordinary pushes through.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from e2e.guard_fixtures import Guard, StartGuard, StoredDecision, describe, run_client
from e2e.servers import GitHttpServer, run_git

pytestmark = pytest.mark.slow

ZERO = "0" * 40
EMPTY_PACK = b"PACK\x00\x00\x00\x02\x00\x00\x00\x00"
EMPTY_PACK += hashlib.sha1(EMPTY_PACK).digest()
PUSH_TYPE = "application/x-git-receive-pack-request"


def pkt(payload: bytes) -> bytes:
    return b"%04x" % (len(payload) + 4) + payload


def send_push(
    guard: Guard,
    server: GitHttpServer,
    body: bytes,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    with httpx.Client(proxy=guard.session().proxy_url, timeout=30) as client:
        return client.request(
            method,
            f"{server.repo_url}/git-receive-pack",
            content=body,
            headers={"Content-Type": PUSH_TYPE, "User-Agent": "git/2.39.5", **(headers or {})},
        )


def pushes_decided(guard: Guard, count: int = 1, timeout: float = 10.0) -> list[StoredDecision]:
    """The push decisions, once ``count`` of them are recorded."""
    deadline = time.monotonic() + timeout
    while True:
        found = [d for d in guard.decisions() if d.provider == "git" and d.verb != "read"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def nothing_reached_receive_pack(server: GitHttpServer, before: dict[str, str]) -> None:
    assert server.log.matching(None, "/repo.git/git-receive-pack") == []
    assert server.branches() == before


@pytest.fixture
def guard(start_guard: StartGuard) -> Guard:
    return start_guard()


def test_an_upper_case_delete_behind_a_create_is_held(
    guard: Guard, git_server: GitHttpServer
) -> None:
    """receive-pack parses ids in either case (hex.c get_oid_hex): the delete of
    feature-x counts although a lower-case create comes first."""
    before = git_server.branches()
    body = pkt(f"{ZERO} {before['main']} refs/heads/harmless\x00report-status\n".encode())
    body += pkt(f"{before['feature-x'].upper()} {ZERO} refs/heads/feature-x\n".encode())
    response = send_push(guard, git_server, body + b"0000" + EMPTY_PACK)

    assert b"held for approval" in response.content, response.content
    nothing_reached_receive_pack(git_server, before)
    [decision] = pushes_decided(guard)
    assert (decision.outcome, decision.verb, decision.resource_name) == (
        "hold",
        "delete",
        "refs/heads/feature-x",
    )
    assert "github/hold-branch-delete" in decision.rules


def test_commands_sharing_a_certificate_packet_are_all_read(
    guard: Guard, git_server: GitHttpServer
) -> None:
    """A push certificate's commands are its lines (queue_commands_from_cert), not its
    packets: the delete in the second line of one packet is executed by receive-pack."""
    before = git_server.branches()
    certificate = (
        "certificate version 0.1\npusher A <a@example.invalid> 0 +0000\nnonce 1-2\n\n"
        f"{ZERO} {before['main']} refs/heads/harmless\n"
        f"{before['feature-x']} {ZERO} refs/heads/feature-x\n"
        "-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"
    )
    body = pkt(b"push-cert\x00report-status\n") + pkt(certificate.encode())
    body += pkt(b"push-cert-end\n") + b"0000" + EMPTY_PACK
    response = send_push(guard, git_server, body)

    assert b"held for approval" in response.content, response.content
    nothing_reached_receive_pack(git_server, before)
    assert [d.outcome for d in pushes_decided(guard)] == ["hold"]


def test_a_branch_deleted_and_created_again_in_one_push_is_a_rewrite(
    start_guard: StartGuard, git_server: GitHttpServer
) -> None:
    """In a dev repository a branch delete passes, and a create is harmless alone; the
    two together in one push rewind release/1 (receive-pack runs them in order), which
    is held like a force push of a protected branch."""
    guard = start_guard(environments={"git:repo:repo": "dev"})
    first = git_server.git("rev-parse", "main~1").strip()
    git_server.git("branch", "release/1", "main")
    before = git_server.branches()
    body = pkt(f"{before['release/1']} {ZERO} refs/heads/release/1\x00report-status\n".encode())
    body += pkt(f"{ZERO} {first} refs/heads/release/1\n".encode())
    response = send_push(guard, git_server, body + b"0000" + EMPTY_PACK)

    assert b"held for approval" in response.content, response.content
    nothing_reached_receive_pack(git_server, before)
    [decision] = pushes_decided(guard)
    assert decision.outcome == "hold"
    assert "github/hold-protected-branch-rewrite" in decision.rules


def test_a_push_sent_with_another_method_is_decided_as_a_push(
    guard: Guard, git_server: GitHttpServer
) -> None:
    """http-backend answers 405 to a PUT, but a server that does not check the method
    runs receive-pack: the body is read as the push it is, never as a read."""
    before = git_server.branches()
    body = pkt(f"{before['feature-x']} {ZERO} refs/heads/feature-x\x00report-status\n".encode())
    response = send_push(guard, git_server, body + b"0000", method="PUT")

    assert response.status_code in (200, 403), response.text
    nothing_reached_receive_pack(git_server, before)
    [decision] = pushes_decided(guard)
    assert (decision.outcome, decision.verb) == ("hold", "delete")


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip"])
def test_a_compressed_push_deleting_a_branch_is_held(
    guard: Guard, git_server: GitHttpServer, encoding: str
) -> None:
    before = git_server.branches()
    body = pkt(f"{before['feature-x']} {ZERO} refs/heads/feature-x\x00report-status\n".encode())
    response = send_push(
        guard, git_server, gzip.compress(body + b"0000"), headers={"Content-Encoding": encoding}
    )
    assert b"held for approval" in response.content, response.content
    nothing_reached_receive_pack(git_server, before)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"00zz" + b"x" * 40, {}),  # a length receive-pack dies on
        (gzip.compress(b"0098" + b"1" * 40)[:-6], {"Content-Encoding": "gzip"}),  # truncated
        (b"\x1f\x9d\x90garbage", {"Content-Encoding": "compress"}),  # no decoder
    ],
)
def test_a_push_the_guard_cannot_read_is_denied(
    guard: Guard, git_server: GitHttpServer, body: bytes, headers: dict[str, str]
) -> None:
    before = git_server.branches()
    response = send_push(guard, git_server, body, headers=headers)
    assert response.status_code == 403, response.text
    nothing_reached_receive_pack(git_server, before)
    [decision] = pushes_decided(guard)
    assert (decision.outcome, decision.verb) == ("deny", "unknown")


# ------------------------------------------------------------------- real git pushes


def guarded_git(guard: Guard, env: dict[str, str]) -> Callable[..., tuple[int, str]]:
    proxied = {**env, **guard.session().proxy_env()}

    def git(*args: str, cwd: Path | None = None) -> tuple[int, str]:
        proc = run_client(["git", *args], proxied, cwd=cwd)
        return proc.returncode, describe(proc)

    return git


def test_real_git_delete_with_push_options_is_held(
    guard: Guard, git_server: GitHttpServer, git_environ: dict[str, str], tmp_path: Path
) -> None:
    """git sends a push-options section when the server advertises it; the delete is
    still read, and held."""
    git_server.git("config", "receive.advertisePushOptions", "true")
    git = guarded_git(guard, git_environ)
    code, out = git("clone", "--quiet", git_server.repo_url, str(tmp_path / "clone"))
    assert code == 0, out
    before = git_server.branches()

    code, out = git(
        "push", "-o", "ci.skip", "origin", "--delete", "feature-x", cwd=tmp_path / "clone"
    )
    assert code != 0 and "held for approval" in out, out
    assert git_server.branches() == before


def test_real_git_push_of_several_refs_is_allowed_and_lands(
    guard: Guard, git_server: GitHttpServer, git_environ: dict[str, str], tmp_path: Path
) -> None:
    """Reading every update does not hold an ordinary push: two new branches and a
    fast-forward of feature-x in one push all land."""
    git = guarded_git(guard, git_environ)
    work = tmp_path / "clone"
    code, out = git("clone", "--quiet", git_server.repo_url, str(work))
    assert code == 0, out
    run_git(["checkout", "--quiet", "feature-x"], git_environ, cwd=work)
    (work / "more.py").write_text("MORE = 1\n")
    run_git(["add", "more.py"], git_environ, cwd=work)
    run_git(["commit", "--quiet", "-m", "More"], git_environ, cwd=work)
    head = run_git(["rev-parse", "HEAD"], git_environ, cwd=work).strip()

    code, out = git(
        "push",
        "origin",
        "feature-x",
        "HEAD:refs/heads/topic-a",
        "main:refs/heads/topic-b",
        cwd=work,
    )
    assert code == 0, out
    branches = git_server.branches()
    assert (branches["feature-x"], branches["topic-a"]) == (head, head)
    assert branches["topic-b"] == branches["main"]
    [decision] = pushes_decided(guard)
    assert decision.outcome == "allow"

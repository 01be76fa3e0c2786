"""The guard's reading of a push against what a real ``git receive-pack`` does with it.

hypothesis builds pushes (creates, updates, deletes; ids in lower, upper or mixed
case; capabilities on the first, last, every or no line; push options; the command
list ended by a flush or a delim; signed pushes with a certificate; gzip; a corruption
now and then), each body goes to ``git http-backend`` (which inflates gzip and runs
``receive-pack --stateless-rpc``, as the e2e git server does) over a fresh copy of a
scratch bare repository, and the refs it changed are compared with the guard's
reading of the same request:

* every changed ref is in the action or its readings with the right verb: a deleted
  ref as a delete, a created one as a create, an updated one as an update (or as a
  delete and a create of it in the same push), and an update that is not a
  fast-forward carries ``possible-force-push``;
* a push the guard reads as unknown fails closed, which is never less; but a push
  generated well-formed must be read (a guard that reads nothing would pass the
  first rule alone).

``GUARDPROXY_HYPOTHESIS_EXAMPLES=500`` runs more examples than the CI slice.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e.servers import git_env, run_git
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from guardproxy.action import Action, Verb
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.request import HttpRequest

EXAMPLES = int(os.environ.get("GUARDPROXY_HYPOTHESIS_EXAMPLES", "30"))
ZERO = "0" * 40
REFS = (
    "refs/heads/main",
    "refs/heads/feature",
    "refs/heads/topic",
    "refs/tags/v1",
    "refs/heads/release/1",
)
OLD_CHOICES = ("current",) * 6 + ("zero", "c1", "c2", "unknown")
NEW_CHOICES = ("zero", "c1", "c2", "c3", "ff", "rw", "ff", "rw", "unknown")
CAPABILITIES = (
    "report-status",
    "atomic",
    "push-options",
    "quiet",
    "agent=git/2.39.5",
    "object-format=sha1",
    "ofs-delta",
)
SIGNATURE = "-----BEGIN PGP SIGNATURE-----\n\niQEzBAABCAAdFiEE\n-----END PGP SIGNATURE-----\n"
BACKEND_TIMEOUT = 20.0


@dataclass(frozen=True)
class Scratch:
    """A bare repository to copy for each push, its refs, and what pushes may name."""

    template: Path
    work: Path
    env: dict[str, str]
    ids: dict[str, str]
    refs: dict[str, str]
    pack: bytes


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Scratch:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path_factory.mktemp("receive-pack")
    env = git_env(root / "home")
    work = root / "work"
    run_git(["init", "--quiet", "-b", "main", str(work)], env)

    def commit(name: str, text: str) -> str:
        (work / "file").write_text(text)
        run_git(["add", "file"], env, cwd=work)
        run_git(["commit", "--quiet", "-m", name], env, cwd=work)
        return run_git(["rev-parse", "HEAD"], env, cwd=work).strip()

    ids = {"c1": commit("c1", "one\n"), "c2": commit("c2", "two\n")}
    run_git(["checkout", "--quiet", "-b", "feature"], env, cwd=work)
    ids["c3"] = commit("c3", "three\n")
    run_git(["checkout", "--quiet", "-b", "ff", ids["c2"]], env, cwd=work)
    ids["ff"] = commit("ff", "fast-forward of main\n")
    run_git(["checkout", "--quiet", "-b", "rw", ids["c1"]], env, cwd=work)
    ids["rw"] = commit("rw", "rewrite of main\n")
    ids["unknown"] = "12345678" * 5
    run_git(["tag", "v1", ids["c1"]], env, cwd=work)

    template = root / "template.git"
    run_git(["init", "--quiet", "--bare", "-b", "main", str(template)], env)
    run_git(["config", "--file", str(template / "config"), "http.receivepack", "true"], env)
    run_git(["push", "--quiet", str(template), "main", "feature", "v1"], env, cwd=work)
    # the pack a client would send for ff and rw: their objects, not the server's
    proc = subprocess.run(
        ["git", "pack-objects", "--revs", "--stdout", "--quiet"],
        input=f"{ids['ff']}\n{ids['rw']}\n^{ids['c2']}\n".encode(),
        cwd=work,
        env=env,
        capture_output=True,
        timeout=BACKEND_TIMEOUT,
        check=True,
    )
    refs = {
        "refs/heads/main": ids["c2"],
        "refs/heads/feature": ids["c3"],
        "refs/tags/v1": ids["c1"],
    }
    return Scratch(template, work, env, ids, refs, proc.stdout)


# ------------------------------------------------------------------------- pushes


@dataclass(frozen=True)
class Command:
    ref: str
    old: str  # a name from OLD_CHOICES
    new: str  # a name from NEW_CHOICES
    case: str  # lower, upper, mixed


@dataclass(frozen=True)
class Push:
    commands: tuple[Command, ...]
    signed: int  # how many of the commands (from the end) go in a push certificate
    placement: str  # which command lines carry the capabilities: first, last, every, none
    capabilities: tuple[str, ...]
    options: tuple[str, ...] | None  # a push-options section, or none
    terminator: bytes  # ends the command list: flush or delim
    with_pack: bool
    encoding: str  # "", gzip, x-gzip
    corruption: str  # "" or what was broken
    advertise_options: bool
    advertise_atomic: bool


def _cased(hex_id: str, case: str) -> str:
    if case == "upper":
        return hex_id.upper()
    if case == "mixed":
        return "".join(c.upper() if i % 2 else c for i, c in enumerate(hex_id))
    return hex_id


def pkt(payload: bytes) -> bytes:
    return b"%04x" % (len(payload) + 4) + payload


commands = st.builds(
    Command,
    st.sampled_from(REFS),
    st.sampled_from(OLD_CHOICES),
    st.sampled_from(NEW_CHOICES),
    st.sampled_from(("lower", "lower", "upper", "mixed")),
)


@st.composite
def pushes(draw: st.DrawFn) -> Push:
    """Mostly pushes receive-pack accepts (a push-options section when it is asked for
    and advertised), now and then one it must not (a section nobody asked for, a
    corruption)."""
    capabilities = tuple(draw(st.lists(st.sampled_from(CAPABILITIES), max_size=4, unique=True)))
    requested = "push-options" in capabilities
    advertise_options = (
        draw(st.booleans()) if not requested else draw(st.sampled_from((True,) * 3 + (False,)))
    )
    options: tuple[str, ...] | None = None
    if (requested and advertise_options) or draw(st.integers(0, 9)) == 0:
        options = draw(st.sampled_from((("ci.skip",), ("ci.skip", "x=y"), ())))
    return Push(
        commands=tuple(draw(st.lists(commands, min_size=1, max_size=4))),
        signed=draw(st.sampled_from((0, 0, 0, 1, 2))),
        placement=draw(st.sampled_from(("first", "first", "last", "every", "none"))),
        capabilities=capabilities,
        options=options,
        terminator=draw(st.sampled_from((b"0000", b"0000", b"0001"))),
        with_pack=draw(st.sampled_from((True, True, True, False))),
        encoding=draw(st.sampled_from(("", "", "gzip", "x-gzip"))),
        corruption=draw(
            st.sampled_from(("",) * 12 + ("double-space", "truncated", "bad-length", "crlf"))
        ),
        advertise_options=advertise_options,
        advertise_atomic=draw(st.booleans()),
    )


def serialise(push: Push, scratch: Scratch) -> tuple[bytes, list[tuple[str, str]]]:
    """The request body and headers for ``push``."""
    lines: list[str] = []
    for command in push.commands:
        current = scratch.refs.get(command.ref, ZERO)
        old = current if command.old == "current" else scratch.ids.get(command.old, ZERO)
        new = scratch.ids.get(command.new, ZERO)
        space = "  " if push.corruption == "double-space" and not lines else " "
        lines.append(f"{_cased(old, command.case)}{space}{_cased(new, command.case)} {command.ref}")
    split = len(lines) - min(push.signed, len(lines))
    unsigned, signed = lines[:split], lines[split:]
    caps = " ".join(push.capabilities).encode()
    eol = b"\r\n" if push.corruption == "crlf" else b"\n"
    packets: list[bytes] = []
    carriers = unsigned + (["push-cert"] if signed else [])
    for index, line in enumerate(carriers):
        on_this_line = (
            push.placement == "every"
            or (push.placement == "first" and index == 0)
            or (push.placement == "last" and index == len(carriers) - 1)
        )
        payload = line.encode() + (b"\x00" + caps if on_this_line and caps else b"")
        packets.append(pkt(payload + eol))
        if line == "push-cert":
            certificate = (
                "certificate version 0.1\npusher E2E <e2e@example.invalid> 0 +0000\n"
                "pushee http://127.0.0.1/repo.git\nnonce 0-0\n\n"
                + "".join(f"{signed_line}\n" for signed_line in signed)
                + SIGNATURE
            )
            packets += [pkt(c.encode()) for c in certificate.splitlines(keepends=True)]
            packets.append(pkt(b"push-cert-end\n"))
    body = b"".join(packets) + push.terminator
    if push.options is not None:
        body += b"".join(pkt(o.encode() + b"\n") for o in push.options) + b"0000"
    if push.with_pack:
        body += scratch.pack
    if push.corruption == "truncated":
        body = body[: len(body) // 2]
    elif push.corruption == "bad-length":
        body = b"00zz" + body[4:]
    headers = [("content-type", "application/x-git-receive-pack-request")]
    if push.encoding:
        body = gzip.compress(body)
        headers.append(("content-encoding", push.encoding))
    return body, headers


# ------------------------------------------------------------------------- server


def receive(push: Push, body: bytes, headers: list[tuple[str, str]], scratch: Scratch) -> Path:
    """Hand the request to git http-backend over a fresh copy of the scratch repository;
    returns the copy."""
    root = scratch.template.parent / "servers"
    root.mkdir(exist_ok=True)
    repo = root / f"repo-{os.getpid()}-{id(push)}.git"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(scratch.template, repo)
    with (repo / "config").open("a") as config:
        config.write(
            "[receive]\n"
            f"\tadvertisePushOptions = {str(push.advertise_options).lower()}\n"
            f"\tadvertiseAtomic = {str(push.advertise_atomic).lower()}\n"
        )
    env = {
        **scratch.env,
        "GIT_PROJECT_ROOT": str(root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "REQUEST_METHOD": "POST",
        "PATH_INFO": f"/{repo.name}/git-receive-pack",
        "QUERY_STRING": "",
        "CONTENT_TYPE": dict(headers)["content-type"],
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_USER": "differential",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "GATEWAY_INTERFACE": "CGI/1.1",
    }
    if push.encoding:
        env["HTTP_CONTENT_ENCODING"] = push.encoding
    subprocess.run(
        ["git", "http-backend"],
        input=body,
        env=env,
        capture_output=True,
        timeout=BACKEND_TIMEOUT,
        check=False,
    )
    return repo


def refs_of(repo: Path, env: dict[str, str]) -> dict[str, str]:
    out = run_git(
        ["--git-dir", str(repo), "for-each-ref", "--format=%(refname) %(objectname)"], env
    )
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def is_ancestor(repo: Path, env: dict[str, str], old: str, new: str) -> bool:
    proc = subprocess.run(
        ["git", "--git-dir", str(repo), "merge-base", "--is-ancestor", old, new],
        env=env,
        capture_output=True,
        timeout=BACKEND_TIMEOUT,
        check=False,
    )
    return proc.returncode == 0


# ------------------------------------------------------------------------ compare


def guard_reading(body: bytes, headers: list[tuple[str, str]]) -> Action:
    request = HttpRequest(
        method="POST",
        scheme="http",
        host="127.0.0.1",
        port=80,
        path="/repo.git/git-receive-pack",
        headers=(*headers, ("user-agent", "git/2.39.5")),
        body=body,
    )
    return recognise(request, RecogniseSettings())


def missed_changes(
    action: Action, before: dict[str, str], after: dict[str, str], repo: Path, env: dict[str, str]
) -> list[str]:
    """The ref changes receive-pack made that the guard's reading does not cover."""
    if not action.classified:
        return []  # unknown: the bundle's unclassified decision, never an allow
    readings = action.all_readings()
    missed: list[str] = []
    for ref in sorted(set(before) | set(after)):
        old, new = before.get(ref), after.get(ref)
        if old == new:
            continue
        mine = [r for r in readings if r.resource.name == ref]
        verbs = {r.verb for r in mine}
        if new is None:
            ok = Verb.DELETE in verbs
        elif old is None:
            ok = Verb.CREATE in verbs
        else:
            ok = Verb.UPDATE in verbs or {Verb.DELETE, Verb.CREATE} <= verbs
            if ok and not is_ancestor(repo, env, old, new):
                ok = any("possible-force-push" in r.risk_tags for r in mine)
        if not ok:
            missed.append(f"{ref}: {old} -> {new}, read as {[(r.verb, r.risk_tags) for r in mine]}")
    return missed


PLAIN = Push(
    commands=(Command("refs/heads/main", "current", "ff", "lower"),),
    signed=0,
    placement="first",
    capabilities=("report-status",),
    options=None,
    terminator=b"0000",
    with_pack=True,
    encoding="",
    corruption="",
    advertise_options=False,
    advertise_atomic=False,
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(push=pushes())
@example(push=PLAIN)
@example(
    push=Push(  # upper-case ids: receive-pack takes them (hex.c), the old regex did not
        commands=(
            Command("refs/heads/topic", "zero", "c1", "lower"),
            Command("refs/heads/main", "current", "zero", "upper"),
            Command("refs/heads/feature", "current", "rw", "mixed"),
        ),
        signed=0,
        placement="first",
        capabilities=("report-status",),
        options=None,
        terminator=b"0000",
        with_pack=True,
        encoding="",
        corruption="",
        advertise_options=False,
        advertise_atomic=False,
    )
)
@example(
    push=Push(  # two commands in one certificate, one unsigned before it, gzip
        commands=(
            Command("refs/heads/topic", "zero", "ff", "lower"),
            Command("refs/heads/main", "current", "rw", "lower"),
            Command("refs/tags/v1", "current", "zero", "lower"),
        ),
        signed=2,
        placement="every",
        capabilities=("report-status", "push-options"),
        options=("ci.skip",),
        terminator=b"0001",
        with_pack=True,
        encoding="gzip",
        corruption="",
        advertise_options=True,
        advertise_atomic=False,
    )
)
def test_guard_reads_at_least_what_receive_pack_does(push: Push, scratch: Scratch) -> None:
    body, headers = serialise(push, scratch)
    repo = receive(push, body, headers, scratch)
    try:
        after = refs_of(repo, scratch.env)
        action = guard_reading(body, headers)
        missed = missed_changes(action, scratch.refs, after, repo, scratch.env)
        changed = sum(
            1 for r in set(after) | set(scratch.refs) if after.get(r) != scratch.refs.get(r)
        )
        event(f"receive-pack changed {min(changed, 2)} refs")
        if changed:
            event(
                f"refs changed: signed {bool(push.signed)}, options {push.options is not None}, "
                f"{push.encoding or 'identity'}"
            )
        assert not missed, f"{push}\nreceive-pack changed what the guard did not read: {missed}"
        if not push.corruption:
            assert action.classified, f"a well-formed push read as unknown: {push}\n{action}"
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def test_the_examples_change_refs(scratch: Scratch) -> None:
    """The comparison is not vacuous: the plain push really moves main on the server."""
    body, headers = serialise(PLAIN, scratch)
    repo = receive(PLAIN, body, headers, scratch)
    try:
        assert refs_of(repo, scratch.env)["refs/heads/main"] == scratch.ids["ff"]
    finally:
        shutil.rmtree(repo, ignore_errors=True)

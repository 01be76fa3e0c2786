"""Real upstream servers for end-to-end tests, all on loopback and all bounded in time.

The proxy under test sits between real clients (kubectl, git, boto3, the AWS CLI) and
real upstreams.  These servers stand in for the upstreams: each one speaks enough of
its protocol for the real client to succeed, records every request it receives (so a
test can assert that a denied request never reached the upstream), binds 127.0.0.1 on
an ephemeral port, runs on daemon threads, and bounds every connection and every
streaming response by a few seconds so that a stuck proxy fails a test instead of
hanging the suite.

This module holds the echo, git and moto servers and re-exports the Kubernetes API
server from :mod:`.kube`; shared HTTP plumbing lives in :mod:`._http`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from io import BytesIO
from pathlib import Path
from typing import Any, Self, cast
from urllib.parse import urlsplit
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from ._http import (
    CONNECTION_TIMEOUT,
    JSON,
    LOOPBACK,
    BaseHandler,
    RecordedRequest,
    RequestLog,
    UpstreamServer,
    server_tls_context,
)
from .kube import KubeApiServer, KubeStore, kubectl_env, write_kubeconfig
from .pki import ThrowawayPki

__all__ = [
    "EchoServer",
    "GitHttpServer",
    "KubeApiServer",
    "KubeStore",
    "MotoServer",
    "RecordedRequest",
    "RequestLog",
    "aws_env",
    "git_env",
    "kubectl_env",
    "run_git",
    "write_kubeconfig",
]

# ------------------------------------------------------------------------------- echo


class _EchoHandler(BaseHandler):
    """Echo any request as JSON; ``/sse`` streams events, ``/slow`` delays, ``/status/N``."""

    SSE_EVENTS = 3
    SSE_INTERVAL = 0.5
    SLOW_DEFAULT = 2.0
    SLOW_MAX = 5.0

    def _dispatch(self) -> None:
        try:
            body = self.read_body()
        except ValueError:
            self.send_json(413, {"error": "request body too large or malformed"})
            return
        entry = self.record(body)
        path = entry.path
        try:
            if path == "/sse":
                self._sse()
                return
            status = 200
            if path == "/slow":
                seconds = float(entry.query.get("seconds", [self.SLOW_DEFAULT])[0])
                self.pause(min(max(seconds, 0.0), self.SLOW_MAX))
            elif path.startswith("/status/"):
                status = int(path.removeprefix("/status/"))
                if not 200 <= status <= 599:
                    raise ValueError(status)
        except ValueError as exc:
            self.send_json(400, {"error": f"bad parameter: {exc}"})
            return
        self.send_json(status, self._echo(entry))

    def _echo(self, entry: RecordedRequest) -> JSON:
        return {
            "method": entry.method,
            "path": entry.path,
            "target": entry.target,
            "headers": [list(h) for h in entry.headers],
            "body_length": len(entry.body),
            "body_sha256": hashlib.sha256(entry.body).hexdigest(),
            "tls": isinstance(self.request, ssl.SSLSocket),
            "client_cn": entry.client_cn,
        }

    def _sse(self) -> None:
        self.start_chunked(200, "text/event-stream")
        try:
            for n in range(self.SSE_EVENTS):
                if n and not self.pause(self.SSE_INTERVAL):
                    break
                event = {"n": n, "server_time": time.time()}
                self.write_chunk(f"id: {n}\nevent: tick\ndata: {json.dumps(event)}\n\n".encode())
            self.end_chunked()
        except OSError:
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch  # noqa: N815


class EchoServer(UpstreamServer):
    """Recording HTTP(S) echo upstream for generic proxying and streaming tests.

    * any method, any path: ``200`` JSON ``{method, path, target, headers, body_length,
      body_sha256, tls, client_cn}``;
    * ``/sse``: three server-sent events 0.5 s apart, chunked, so time-to-first-byte
      through a proxy shows whether it streams or buffers;
    * ``/slow?seconds=N``: answers after N seconds (default 2, at most 5);
    * ``/status/N``: answers with status N (200-599).
    """

    def __init__(self, pki: ThrowawayPki | None = None, client_ca_pem: bytes | None = None):
        ctx = None
        if pki is not None:
            ctx = server_tls_context(pki, client_ca_pem, require_client_cert=False)
        super().__init__(_EchoHandler, ctx)


# ------------------------------------------------------------------ git smart-HTTP server


GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "E2E Author",
    "GIT_AUTHOR_EMAIL": "author@e2e.invalid",
    "GIT_COMMITTER_NAME": "E2E Committer",
    "GIT_COMMITTER_EMAIL": "committer@e2e.invalid",
}


def git_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for running git in isolation: no system/global config, no prompts."""
    home.mkdir(parents=True, exist_ok=True)
    global_config = home / ".gitconfig"
    global_config.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_IDENTITY)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=str(global_config),
        GIT_TERMINAL_PROMPT="0",
        GIT_ASKPASS="/bin/true",
    )
    env.update(extra or {})
    return env


def run_git(
    args: list[str], env: Mapping[str, str], cwd: Path | None = None, timeout: float = 20
) -> str:
    """Run git, raising with its stderr on failure; returns stdout."""
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


class _GitHandler(BaseHandler):
    """Hand each request to ``git http-backend`` as CGI and relay its answer."""

    CGI_TIMEOUT = 10.0

    @property
    def git(self) -> GitHttpServer:
        return cast(GitHttpServer, self.server.upstream)

    def _dispatch(self) -> None:
        try:
            body = self.read_body()
        except ValueError:
            self.send_bytes(413, b"too large\n", "text/plain")
            return
        entry = self.record(body)
        split = urlsplit(entry.target)
        env = git_env(
            self.git.home,
            {
                "GIT_PROJECT_ROOT": str(self.git.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": entry.method,
                "PATH_INFO": split.path,
                "QUERY_STRING": split.query,
                "CONTENT_TYPE": entry.header("Content-Type") or "",
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": self.git.remote_user,
                "REMOTE_ADDR": str(self.client_address[0]),
                "SERVER_PROTOCOL": "HTTP/1.1",
                "GATEWAY_INTERFACE": "CGI/1.1",
            },
        )
        if encoding := entry.header("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = encoding
        if protocol := entry.header("Git-Protocol"):
            env["GIT_PROTOCOL"] = protocol
            env["HTTP_GIT_PROTOCOL"] = protocol
        try:
            proc = subprocess.run(
                ["git", "http-backend"],
                input=body,
                env=env,
                capture_output=True,
                timeout=self.CGI_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            self.send_bytes(504, b"git http-backend timed out\n", "text/plain")
            return
        status, headers, payload = _parse_cgi(proc.stdout)
        if not proc.stdout:
            status, payload = 500, proc.stderr or b"git http-backend produced no output\n"
        ctype = headers.pop("content-type", "text/plain")
        self.send_bytes(status, payload, ctype, headers)

    do_GET = do_POST = _dispatch  # noqa: N815


def _parse_cgi(output: bytes) -> tuple[int, dict[str, str], bytes]:
    """Split CGI output into (status, headers without Status/Content-Length, body)."""
    head, sep, body = output.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = output.partition(b"\n\n")
    status = 200
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "status":
            status = int(value.split()[0])
        elif key and key not in ("content-length", "transfer-encoding", "connection"):
            headers[key] = value
    return status, headers, body


class GitHttpServer(UpstreamServer):
    """git smart-HTTP over plain HTTP, backed by the real ``git http-backend`` CGI.

    Serves one bare repository, ``<url>/repo.git``, created fresh with branches
    ``main`` (two commits) and ``feature-x`` (one more), and receive-pack enabled
    (``http.receivepack=true`` plus ``REMOTE_USER``) so pushes and branch deletions
    work.  The repository on disk is the server-side truth for assertions.
    """

    REPO = "repo.git"

    def __init__(self, root: Path, remote_user: str = "e2e-agent") -> None:
        super().__init__(_GitHandler)
        self.root = root
        self.home = root / ".home"
        self.remote_user = remote_user
        self.bare = root / self.REPO
        root.mkdir(parents=True, exist_ok=True)
        self._create_repository()

    @property
    def repo_url(self) -> str:
        return f"{self.url}/{self.REPO}"

    def git(self, *args: str) -> str:
        """Run git against the served bare repository."""
        return run_git(["--git-dir", str(self.bare), *args], git_env(self.home))

    def branches(self) -> dict[str, str]:
        """Branch name -> commit id, read from the bare repository."""
        out = self.git("for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads")
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def _create_repository(self) -> None:
        env = git_env(self.home)
        seed = self.root / ".seed"
        run_git(["init", "--quiet", "--bare", "-b", "main", str(self.bare)], env)
        run_git(["--git-dir", str(self.bare), "config", "http.receivepack", "true"], env)
        run_git(["init", "--quiet", "-b", "main", str(seed)], env)
        commits = [
            ("main", "README.md", "# e2e repository\n", "Initial commit"),
            ("main", "app.py", "print('hello')\n", "Add app"),
            ("feature-x", "feature.py", "FEATURE_X = True\n", "Add feature x"),
        ]
        for n, (branch, name, text, message) in enumerate(commits):
            if branch != "main":
                run_git(["checkout", "--quiet", "-B", branch], env, cwd=seed)
            (seed / name).write_text(text)
            stamp = f"2024-01-0{n + 1}T12:00:00Z"
            run_git(["add", name], {**env, "GIT_AUTHOR_DATE": stamp}, cwd=seed)
            run_git(
                ["commit", "--quiet", "-m", message],
                {**env, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp},
                cwd=seed,
            )
        run_git(["push", "--quiet", str(self.bare), "main", "feature-x"], env, cwd=seed)
        shutil.rmtree(seed)


# -------------------------------------------------------------------------------- moto


class _RecordingWsgi:
    """WSGI middleware that records each request before moto handles it."""

    def __init__(self, app: WSGIApplication, log: RequestLog) -> None:
        self.app = app
        self.log = log

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        stream = environ["wsgi.input"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            body = stream.read(length)
        elif environ.get("wsgi.input_terminated"):
            body = stream.read()
        else:
            body = b""
        environ["wsgi.input"] = BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        target = environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
        if "?" not in target and environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]
        headers = [
            (key[5:].replace("_", "-").title(), str(value))
            for key, value in environ.items()
            if key.startswith("HTTP_")
        ]
        if environ.get("CONTENT_TYPE"):
            headers.append(("Content-Type", environ["CONTENT_TYPE"]))
        self.log.append(RecordedRequest(environ["REQUEST_METHOD"], target, tuple(headers), body))
        return self.app(environ, start_response)


class _QuietMotoHandler(MotoRequestHandler):
    """moto's request handler with an idle timeout and without per-request stderr lines."""

    timeout = CONNECTION_TIMEOUT

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class MotoServer:
    """moto in server mode on loopback, with request recording and a clean teardown.

    Equivalent to ``moto.server.ThreadedMotoServer`` (same WSGI app and handler) but
    binds an ephemeral port, records requests, bounds idle connections, and closes its
    socket on stop.  moto's backends are process-global: :meth:`reset` (``POST
    /moto-api/reset``) wipes every service's state between tests.
    """

    def __init__(
        self,
        wrap: Callable[[WSGIApplication], WSGIApplication] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``wrap``: middleware between the recording and moto (a signature check);
        ``ssl_context``: serve HTTPS with it."""
        self.log = RequestLog()
        backend: WSGIApplication = DomainDispatcherApplication(create_backend_app)
        if wrap is not None:
            backend = wrap(backend)
        app = _RecordingWsgi(backend, self.log)
        self._scheme = "https" if ssl_context is not None else "http"
        self._server: BaseWSGIServer = make_server(
            LOOPBACK, 0, app, threaded=True, request_handler=_QuietMotoHandler,
            ssl_context=ssl_context,
        )  # fmt: skip
        self._thread: threading.Thread | None = None
        self._ssl_context = ssl_context

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def url(self) -> str:
        return f"{self._scheme}://{LOOPBACK}:{self.port}"

    endpoint_url = url

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.log.snapshot()

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"moto:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def reset(self) -> None:
        """Wipe all moto state and the request log."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        context = ssl._create_unverified_context() if self._ssl_context is not None else None
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            resp.read()
        self.log.clear()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def aws_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for boto3/aws CLI against moto: fake keys, no shared config, no IMDS."""
    home.mkdir(parents=True, exist_ok=True)
    config, credentials = home / "aws-config", home / "aws-credentials"
    config.touch()
    credentials.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(credentials),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_PAGER="",
    )
    env.update(extra or {})
    return env

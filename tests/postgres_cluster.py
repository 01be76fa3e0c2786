"""A throwaway PostgreSQL cluster for tests and benchmarks, from the server binaries
on this machine (Debian's ``postgresql`` package: /usr/lib/postgresql/<v>/bin).

The cluster lives in a fresh temporary directory, listens on 127.0.0.1 at a free
port and on a Unix socket in that directory, trusts local connections (nothing but
this machine's tests can reach it), and is removed when stopped.  The fixtures at the
end give tests one cluster per run and a fresh database per test.  ``initdb`` and
``postgres`` refuse to run as root, so as root the cluster runs as ``nobody``.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

SUPERUSER = "guardproxy"
_START_TIMEOUT = 60.0


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, newest version first."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=10
        )
        candidates.append(result.stdout.strip())
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    return None


def postgres_required() -> bool:
    """In CI a missing PostgreSQL is a failure, not a skip."""
    return any(os.environ.get(name) for name in ("CI", "GUARDPROXY_REQUIRE_POSTGRES"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresCluster:
    """``start()`` creates and starts the cluster; ``stop()`` / ``start()`` again
    simulate losing the database; ``destroy()`` stops it and removes its files."""

    def __init__(
        self, bindir: Path, *, fsync: bool = False, settings: dict[str, str] | None = None
    ) -> None:
        """``settings``: more server settings (``-c name=value``), e.g. a benchmark's."""
        self.bindir = bindir
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.root = Path(tempfile.mkdtemp(prefix="guardproxy-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._names = itertools.count(1)
        self._as_nobody = os.getuid() == 0
        if self._as_nobody:
            os.chown(self.root, 65534, 65534)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--no-sync",
                  "--encoding=UTF8", "--locale=C.UTF-8")  # fmt: skip
        self.start()

    def _run(self, tool: str, *args: str, timeout: float = _START_TIMEOUT) -> None:
        command = [str(self.bindir / tool), *args]
        if self._as_nobody:
            command = ["runuser", "-u", "nobody", "--", *command]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync={'on' if self.fsync else 'off'} "
            "-c max_connections=200 -c shared_buffers=32MB"
        ) + "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.root / "log"),
                  "-o", options)  # fmt: skip

    def stop(self) -> None:
        """Stop now: clients' connections are cut (``-m fast``)."""
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return self.url(name)

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "log"
        return (
            "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
        )


# -- pytest fixtures (this module is a plugin: ``-p postgres_cluster`` in pyproject.toml)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One cluster for the whole run (tests take a database each), stopped at the end.

    Without the server binaries the tests that need it skip locally and fail in CI
    (``CI`` or ``GUARDPROXY_REQUIRE_POSTGRES`` set), where ``.ci/run`` installs them.
    """
    bindir = find_bindir()
    if bindir is None:
        message = (
            "PostgreSQL server binaries not found (no initdb in `pg_config --bindir` or "
            "/usr/lib/postgresql/*/bin): install them with `apt-get install postgresql`"
        )
        if postgres_required():
            pytest.fail(message)
        pytest.skip(message)
    cluster = PostgresCluster(bindir)
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh database in the shared cluster."""
    return postgres_cluster.create_database()

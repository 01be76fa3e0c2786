"""Starting guardproxy's parts: the checks and preparations made before the service
starts (data directory, control token, broker, policy bundle, listeners), its one-line
:class:`StartError`, and the addresses it is reached at."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from pathlib import Path

from guardproxy.broker import Broker, CredentialError, load_or_create_key
from guardproxy.config import ProxyConfig, split_host_port
from guardproxy.ops.listen import Listener, bind_problem, clashes, describe
from guardproxy.policy import Bundle, load_bundle


class StartError(Exception):
    """guardproxy cannot start; the message says what failed, why and what to do, in
    one line (the CLI prints it as it is)."""


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory (0700); StartError if it cannot be used."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
    except OSError as error:
        raise StartError(
            f"cannot use the data directory {data_dir}: {os_reason(error)}; make it a "
            "directory you can write, or choose another with --data-dir DIR "
            "($GUARDPROXY_DATA_DIR)"
        ) from error


CONTROL_TOKEN_PREFIX = "gpc_"
"""Control (admin) tokens start with it: never with `-` (which a command line would
read as an option), and recognisable to secret scanners. Older tokens without it
keep working: the token file is read as it is."""


def new_control_token() -> str:
    return CONTROL_TOKEN_PREFIX + secrets.token_urlsafe(32)


def control_token(config: ProxyConfig) -> str:
    """The control API's bearer token, created on first use, readable by its owner only."""
    path = config.control_token_file
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    token = new_control_token()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    return token


def open_broker(config: ProxyConfig) -> Broker:
    """The broker, every real credential source resolved: StartError (one line naming
    the source) if one cannot be."""
    try:
        key = load_or_create_key(config.data_dir)
    except (OSError, ValueError) as error:
        raise StartError(
            f"cannot read or create the broker key in {config.data_dir}: {error}; "
            "check the data directory (--data-dir)"
        ) from error
    broker = Broker(config.brokers, key, dict(os.environ))
    try:
        broker.check()
    except CredentialError as error:
        raise StartError(
            f"a brokered credential cannot be resolved: {error}; fix it or remove the "
            "provider from brokers: in the configuration"
        ) from None
    return broker


def read_control_token(config: ProxyConfig) -> str:
    """The control token (:func:`control_token`); StartError (one line) if it cannot be."""
    try:
        return control_token(config)
    except OSError as error:
        raise StartError(
            f"cannot read or create the control token {config.control_token_file}: "
            f"{os_reason(error)}; check the data directory (--data-dir)"
        ) from error


def load_policies(path: Path) -> Bundle:
    """The bundle at ``path``; StartError (one line: the first problem) if it has errors."""
    if not path.exists():
        raise StartError(
            f"the policy bundle {path} does not exist; pass --policies DIR (or set "
            "$GUARDPROXY_POLICIES), or copy the shipped bundle with `guardproxy policy init DIR`"
        )
    result = load_bundle([path])
    if result.bundle is None:
        errors = result.errors
        if not errors:
            raise StartError(
                f"{path} is not a policy bundle (no BundleConfig); pass a bundle directory "
                "with --policies DIR"
            )
        first = errors[0]
        hint = f" ({first.hint})" if first.hint else ""
        raise StartError(
            f"the policy bundle {path} has errors, {len(errors)} in all; the first: "
            f"{first.position}: {first.message}{hint}; list them with "
            f"`guardproxy policy lint {path}`"
        )
    return result.bundle


def listeners(config: ProxyConfig) -> list[Listener]:
    """Every address a guardproxy with ``config`` listens on, with the flag that sets it."""
    host, port = split_host_port(config.listen)
    found = [Listener("the proxy", host, port, "--listen HOST:PORT")]
    found += [
        Listener("a reverse listener", host, r.port, f"--reverse PORT={r.upstream}")
        for r in config.reverse
    ]
    found.append(Listener("the control API", *split_host_port(config.control),
                          "--control HOST:PORT"))  # fmt: skip
    if config.metrics_listen is not None:
        found.append(Listener("the metrics port", *split_host_port(config.metrics_listen),
                              "--metrics-listen HOST:PORT"))  # fmt: skip
    if config.chat_listen is not None:
        found.append(Listener("the chat callback", *split_host_port(config.chat_listen),
                              "--chat-listen HOST:PORT"))  # fmt: skip
    return found


def check_listeners(config: ProxyConfig) -> None:
    """StartError when a listener could not open its address: before anything starts,
    so the operator hears which port is taken, not a failure half-way through."""
    found = listeners(config)
    clash = clashes(found)
    if clash is not None:
        raise StartError(clash)
    for listener in found:
        problem = bind_problem(listener)
        if problem is not None:
            raise StartError(describe(listener, problem))


def os_reason(error: OSError) -> str:
    if isinstance(error, FileExistsError | NotADirectoryError):
        return f"{error.filename} exists and is not a directory"
    reason = error.strerror or str(error)
    return f"{reason} ({error.filename})" if error.filename else reason


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def reachable_host(address: str) -> str:
    """A host to connect to a socket bound at ``address`` (a wildcard means loopback)."""
    host = split_host_port(address)[0]
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def own_addresses(bound: str) -> set[str]:
    """The names and addresses a request could use to reach a socket bound to ``bound``."""
    own = {bound.lower()}
    if bound in ("0.0.0.0", "::", ""):
        name = socket.gethostname()
        own.update({name.lower(), socket.getfqdn().lower()})
        with contextlib.suppress(OSError):
            own.update(str(info[4][0]) for info in socket.getaddrinfo(name, None))
    return own

"""``guardproxy serve``: the proxy plus its control API, until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pydantic
import yaml

from guardproxy.broker.settings import PROVIDERS, BrokersConfig
from guardproxy.cli.bundles import default_policies, describe_policies
from guardproxy.config import ProxyConfig, ReverseListener, split_host_port
from guardproxy.control.client import DEFAULT_DATA_DIR
from guardproxy.ops.reload import ReloadReport
from guardproxy.server import Guardproxy, StartError


class ConfigError(Exception):
    """A bad configuration file or flag; the message says where."""


def add_proxy_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `serve` and `run` (which starts an embedded proxy)."""
    parser.add_argument(
        "--policies",
        type=Path,
        metavar="DIR",
        help="policy bundle (default: $GUARDPROXY_POLICIES, else ./policies if it is one, "
        "else the bundle shipped with guardproxy)",
    )
    parser.add_argument(
        "--shadow-policies",
        type=Path,
        metavar="DIR",
        help="a candidate bundle to decide and record in shadow, never enforced",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"CA, store and control token (default: {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML file with any ProxyConfig field; flags override it",
    )
    parser.add_argument(
        "--hold-window",
        type=float,
        metavar="SECONDS",
        help="how long a held request waits live for approval (default 20)",
    )
    parser.add_argument(
        "--passthrough",
        action="append",
        default=[],
        metavar="HOST",
        help="tunnel this host's TLS without interception (repeatable)",
    )
    parser.add_argument(
        "--reverse",
        action="append",
        default=[],
        metavar="PORT=URL",
        help="also listen on PORT and forward to URL (for clients that "
        "will not use a proxy, e.g. Go tools to loopback)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="SELECTOR=ENV",
        help="the environment of what a selector names (repeatable), e.g. "
        "aws:account:111122223333=prod, k8s:cluster:host:6443=prod, github:acme=prod, "
        "github:acme/sandbox=dev, git:git.corp/platform=prod, docker:10.0.0.5=prod; "
        "see the README, Environments",
    )
    parser.add_argument(
        "--kube-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a Kubernetes API server to parse as such (repeatable)",
    )
    parser.add_argument("--upstream-ca", action="append", default=[], type=Path, metavar="FILE",
                        help="extra CA to trust for upstream TLS (repeatable)")  # fmt: skip
    parser.add_argument(
        "--broker",
        action="append",
        default=[],
        choices=PROVIDERS,
        metavar="PROVIDER",
        help="hold this provider's real credentials in the guard; the session gets stand-ins "
        f"valid only there (repeatable: {', '.join(PROVIDERS)}; settings: brokers: in --config)",
    )
    parser.add_argument(
        "--upstream-allow",
        choices=["any", "loopback"],
        help="loopback: connect to this machine only (loopback addresses, localhost, names "
        "/etc/hosts maps to loopback) and refuse anything else before looking it up "
        "(default any)",
    )


class _Renamed(argparse.Action):
    """``--port``, which people reach for: name the option that sets the proxy's port."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> None:
        parser.error(
            "serve has no --port; give the proxy's address with --listen HOST:PORT "
            "(e.g. --listen 127.0.0.1:8080) and the control API's with --control HOST:PORT"
        )


def add_commands(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the guarding proxy and its control API")
    add_proxy_options(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", help="proxy address (127.0.0.1:8080)")
    serve.add_argument("--port", action=_Renamed, nargs="?", help=argparse.SUPPRESS)
    serve.add_argument("--control", metavar="HOST:PORT", help="control API (127.0.0.1:8081)")
    notify = serve.add_argument_group("notifications")
    notify.add_argument(
        "--notify-webhook",
        action="append",
        default=[],
        metavar="URL",
        help="POST each hold event as signed JSON to URL (repeatable)",
    )
    secret = notify.add_mutually_exclusive_group()
    secret.add_argument(
        "--notify-secret-file",
        type=Path,
        metavar="FILE",
        help="file holding the webhooks' HMAC signing secret",
    )
    secret.add_argument(
        "--notify-secret-env",
        metavar="NAME",
        help="environment variable holding the webhooks' signing secret",
    )
    notify.add_argument(
        "--notify-slack",
        action="append",
        default=[],
        metavar="URL",
        help="post hold events to this Slack incoming webhook (repeatable)",
    )
    notify.add_argument(
        "--console-url",
        metavar="URL",
        help="the console's address for links in notifications "
        "(default http://127.0.0.1:<control port>/console)",
    )
    serve.add_argument(
        "--destructive-budget",
        type=int,
        metavar="N",
        help="forwarded deletes and destroys per session in 10 minutes before every "
        "further change is held (default 10)",
    )
    serve.add_argument(
        "--store",
        metavar="URL",
        help="database: sqlite:///path.db, or postgresql://user@host/db shared by replicas "
        "(password in PGPASSWORD or ~/.pgpass, not the URL); default: $GUARDPROXY_STORE, "
        "else SQLite in the data directory",
    )
    serve.add_argument(
        "--sqlite-synchronous",
        choices=("normal", "full"),
        help="the data directory's SQLite store: normal (default; a record survives a "
        "kill -9) or full (it also survives a power cut; one disk sync per change); "
        "another store: sqlite:///path.db?synchronous=full",
    )
    serve.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="also serve /metrics, /healthz and /readyz (no token) on this address",
    )
    serve.add_argument(
        "--chat-listen",
        metavar="HOST:PORT",
        help="serve Slack's interactivity callback (POST /slack/interactions only) on this "
        "address, for your ingress to forward to; needs slack: in --config",
    )
    serve.add_argument(
        "--watch-policies",
        type=float,
        metavar="SECONDS",
        help="reload the bundle when its files change, checking every SECONDS "
        "(SIGHUP and `guardproxy policy reload` always work)",
    )
    serve.add_argument(
        "--allow-remote-listen",
        action="store_true",
        default=None,
        help="allow non-loopback addresses (containers whose network keeps agents "
        "away from the control port, see docker/)",
    )
    serve.set_defaults(handler=cmd_serve, background_log=True)


def build_config(args: argparse.Namespace, **overrides: Any) -> ProxyConfig:
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(read_config_file(args.config))
    flags: dict[str, Any] = {
        "policies": args.policies,
        "shadow_policies": args.shadow_policies,
        "data_dir": args.data_dir,
        "hold_window_seconds": args.hold_window,
        "listen": getattr(args, "listen", None),
        "control": getattr(args, "control", None),
        "console_url": getattr(args, "console_url", None),
        "destructive_budget": getattr(args, "destructive_budget", None),
        "store": (args.store or os.environ.get("GUARDPROXY_STORE")) if "store" in args else None,
        "sqlite_synchronous": getattr(args, "sqlite_synchronous", None),
        "metrics_listen": getattr(args, "metrics_listen", None),
        "chat_listen": getattr(args, "chat_listen", None),
        "watch_policies_seconds": getattr(args, "watch_policies", None),
        "allow_remote_listen": getattr(args, "allow_remote_listen", None),
        "upstream_allow": getattr(args, "upstream_allow", None),
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if values.get("policies") is None:
        values["policies"] = default_policies()
    values.setdefault("data_dir", Path(os.environ.get("GUARDPROXY_DATA_DIR") or DEFAULT_DATA_DIR))
    if args.passthrough:
        values["passthrough_hosts"] = [*values.get("passthrough_hosts", []), *args.passthrough]
    if args.kube_host:
        values["kubernetes_hosts"] = [*values.get("kubernetes_hosts", []), *args.kube_host]
    if args.upstream_ca:
        values["upstream_ca_files"] = [*values.get("upstream_ca_files", []), *args.upstream_ca]
    if args.env:
        mapping = dict(values.get("environments", {}))
        for item in args.env:
            selector, sep, environment = item.rpartition("=")
            if not sep:
                raise ConfigError(f"--env {item!r}: write SELECTOR=ENV")
            mapping[selector] = environment
        values["environments"] = mapping
    if args.reverse:
        reverse = list(values.get("reverse", []))
        for item in args.reverse:
            port, sep, url = item.partition("=")
            if not sep or not port.isdigit():
                raise ConfigError(f"--reverse {item!r}: write PORT=URL")
            reverse.append(ReverseListener(port=int(port), upstream=url))
        values["reverse"] = reverse
    if getattr(args, "broker", None):
        try:
            brokers = BrokersConfig.model_validate(values.get("brokers") or {})
        except pydantic.ValidationError as error:
            raise ConfigError(setting_problem(error, args.config)) from None
        values["brokers"] = brokers.with_defaults(args.broker)
    values["notifications"] = [*values.get("notifications", []), *_notify_flags(args)]
    values.update(overrides)
    try:
        config = ProxyConfig.model_validate(values)
    except pydantic.ValidationError as error:
        raise ConfigError(setting_problem(error, args.config)) from None
    for ca_file in config.upstream_ca_files:
        if not ca_file.is_file():
            raise ConfigError(
                f"upstream CA {ca_file}: no such file; give the PEM file of a CA to trust "
                "(--upstream-ca FILE, or upstream_ca_files in --config)"
            )
    return config


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a --config file; ConfigError (one line, with where) if unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"cannot read the config file {path}: {reason}; check the path given to --config"
        ) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise ConfigError(
            f"{where}: the config file is not valid YAML ({problem}); write one `setting: value` "
            "per line"
        ) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (`setting: value` lines)")
    return loaded


def setting_problem(error: pydantic.ValidationError, config_file: Path | None) -> str:
    """One line for the first invalid setting, with a did-you-mean for an unknown one."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "settings"
    source = f"{config_file}: " if config_file is not None else ""
    if first["type"] == "extra_forbidden" and len(first["loc"]) == 1:
        known = list(ProxyConfig.model_fields)
        close = difflib.get_close_matches(str(first["loc"][0]), known, n=1)
        hint = f"did you mean `{close[0]}`?" if close else "see the ProxyConfig fields"
        return f"{source}unknown setting `{where}`; {hint}"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{source}{where}: {message}"


def _notify_flags(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Notification targets given as `serve` flags (the config file can list more)."""
    webhooks: list[str] = getattr(args, "notify_webhook", [])
    secret_file: Path | None = getattr(args, "notify_secret_file", None)
    secret_env: str | None = getattr(args, "notify_secret_env", None)
    if webhooks and secret_file is None and secret_env is None:
        raise ConfigError(
            "--notify-webhook: webhooks are signed; give --notify-secret-file FILE or "
            "--notify-secret-env NAME with the secret shared with the receiver"
        )
    if (secret_file is not None or secret_env is not None) and not webhooks:
        raise ConfigError("--notify-secret-file/--notify-secret-env: no --notify-webhook to sign")
    secret: dict[str, Any] = (
        {"secret_file": secret_file} if secret_file is not None else {"secret_env": secret_env}
    )
    return [{"kind": "webhook", "url": url, **secret} for url in webhooks] + [
        {"kind": "slack", "url": url} for url in getattr(args, "notify_slack", [])
    ]


def cmd_serve(args: argparse.Namespace) -> int:
    """Exit 2, with one line on stderr, when the configuration is wrong or start fails."""
    try:
        config = build_config(args)
    except ConfigError as error:
        print(f"guardproxy: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config))
    except StartError as error:
        print(f"guardproxy: {error}", file=sys.stderr)
        return 2
    return 0


async def _serve(config: ProxyConfig) -> None:
    service = Guardproxy(config)
    # signals first: a SIGHUP must never meet the default action (exit) once runtime.json
    # says we are up; one during start is moot, start loads the files as they are
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[ReloadReport]] = set()

    def reload() -> None:
        if service.gate is None:
            return
        task = loop.create_task(service.reload_policies("sighup"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    await service.start()
    assert service.proxy is not None and service.control is not None
    proxy_host = split_host_port(config.listen)[0]
    control_host = split_host_port(config.control)[0]
    with contextlib.suppress(OSError):  # a full log destination must not stop the proxy
        print(
            f"guardproxy: proxy on {proxy_host}:{service.proxy.port}, control API on "
            f"{control_host}:{service.control.port} (console {service.console_url()}), "
            f"policies {describe_policies(config.policies)} "
            f"({len(service.bundle.rules)} rules). Wrap an agent with: "
            f"guardproxy run --proxy http://127.0.0.1:{service.proxy.port} -- COMMAND",
            file=sys.stderr,
        )
    try:
        await stop.wait()
    finally:
        await service.stop()

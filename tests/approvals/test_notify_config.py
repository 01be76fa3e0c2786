"""Notification settings from `serve` flags and config files; a bad one stops startup."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guardproxy.cli.main import build_parser
from guardproxy.cli.serve import ConfigError, build_config
from guardproxy.config import ProxyConfig
from guardproxy.server import Guardproxy, StartError

ROOT = Path(__file__).resolve().parents[2]


def config_from(*flags: str) -> ProxyConfig:
    args = build_parser(["serve"]).parse_args(["serve", *flags])
    return build_config(args)


def test_serve_flags_make_signed_webhooks_slack_targets_and_the_console_link(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "secret"
    config = config_from(
        "--data-dir", str(tmp_path),
        "--notify-webhook", "https://hooks.example/a",
        "--notify-webhook", "http://127.0.0.1:9000/b",
        "--notify-secret-file", str(secret),
        "--notify-slack", "https://hooks.slack.example/services/T0/B0/abc",
        "--console-url", "https://guard.example/console",
    )  # fmt: skip
    kinds = [(t.kind, t.url, t.secret_file) for t in config.notifications]
    assert kinds == [
        ("webhook", "https://hooks.example/a", secret),
        ("webhook", "http://127.0.0.1:9000/b", secret),
        ("slack", "https://hooks.slack.example/services/T0/B0/abc", None),
    ]
    assert config.console_url == "https://guard.example/console"


def test_a_webhook_without_a_secret_is_refused_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--notify-secret-file FILE or --notify-secret-env"):
        config_from("--data-dir", str(tmp_path), "--notify-webhook", "https://hooks.example/a")
    with pytest.raises(ConfigError, match="no --notify-webhook to sign"):
        config_from("--data-dir", str(tmp_path), "--notify-secret-env", "HOOK_SECRET")


def test_a_config_file_lists_targets_and_flags_add_to_them(tmp_path: Path) -> None:
    path = tmp_path / "guardproxy.yaml"
    path.write_text(
        "notifications:\n"
        "  - {kind: webhook, url: 'https://hooks.example/a', secret_env: HOOK_SECRET,\n"
        "     events: [held, escalated], max_attempts: 3}\n"
    )
    config = config_from(
        "--data-dir", str(tmp_path), "--config", str(path),
        "--notify-slack", "https://hooks.slack.example/x",
    )  # fmt: skip
    first, second = config.notifications
    assert (first.secret_env, first.events, first.max_attempts) == (
        "HOOK_SECRET",
        ["held", "escalated"],
        3,
    )
    assert second.kind == "slack"
    path.write_text("notifications: [{kind: webhook, url: 'ftp://x'}]\n")
    with pytest.raises(ConfigError, match=r"notifications\.0\.url"):
        config_from("--data-dir", str(tmp_path), "--config", str(path))


def test_an_unreadable_secret_stops_startup_and_leaves_nothing_running(tmp_path: Path) -> None:
    config = ProxyConfig.model_validate(
        {
            "data_dir": tmp_path / "data",
            "policies": ROOT / "policies",
            "listen": "127.0.0.1:0",
            "control": "127.0.0.1:0",
            "notifications": [
                {"url": "https://hooks.example/a", "secret_file": tmp_path / "missing"}
            ],
        }
    )
    service = Guardproxy(config)
    with pytest.raises(StartError, match="cannot read the secret file"):
        asyncio.run(service.start())
    assert service.notifications is None
    with pytest.raises(StartError, match="not started"):
        _ = service.store  # stopped again: store closed, nothing half-running


def test_serve_with_an_unset_secret_exits_with_the_reason_and_never_the_secret(
    tmp_path: Path,
) -> None:
    guardproxy = Path(sys.executable).with_name("guardproxy")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    env.pop("HOOK_SECRET_UNSET", None)
    proc = subprocess.run(
        [
            str(guardproxy), "serve", "--data-dir", str(tmp_path / "data"),
            "--policies", str(ROOT / "policies"),
            "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0",
            "--notify-webhook", "http://127.0.0.1:9/hook",
            "--notify-secret-env", "HOOK_SECRET_UNSET",
        ],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr  # a start-up failure: one line, exit code 2
    assert "HOOK_SECRET_UNSET is empty or unset" in proc.stderr
    assert "webhook http://127.0.0.1:9" in proc.stderr and "/hook" not in proc.stderr

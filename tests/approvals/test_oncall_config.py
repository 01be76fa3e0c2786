"""On-call and Slack settings in the config file and on the command line: the chat
listener is off unless asked for, needs Slack and Slack needs it, it stays on loopback like
every other port, and mistakes are one line naming the setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from guardproxy.cli.main import build_parser
from guardproxy.cli.serve import ConfigError, build_config
from guardproxy.config import ProxyConfig

SLACK = {"channel": "C0HOLDS01", "bot_token_env": "T", "signing_secret_env": "S"}


def config(tmp_path: Path, **values: Any) -> ProxyConfig:
    return ProxyConfig.model_validate({"data_dir": tmp_path, **values})


def test_the_chat_listener_is_off_by_default(tmp_path: Path) -> None:
    found = config(tmp_path)
    assert found.chat_listen is None and found.slack is None
    assert not found.oncall.configured()


def test_slack_and_the_chat_listener_come_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="slack needs chat_listen"):
        config(tmp_path, slack=SLACK)
    with pytest.raises(ValueError, match="chat_listen serves Slack's callback"):
        config(tmp_path, chat_listen="127.0.0.1:8090")
    both = config(tmp_path, slack=SLACK, chat_listen="127.0.0.1:8090")
    assert both.slack is not None and both.slack.api_url == "https://slack.com/api"


def test_the_chat_listener_stays_on_loopback_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"chat_listen '0\.0\.0\.0:8090': guardproxy listens"):
        config(tmp_path, slack=SLACK, chat_listen="0.0.0.0:8090")
    allowed = config(tmp_path, slack=SLACK, chat_listen="0.0.0.0:8090", allow_remote_listen=True)
    assert allowed.chat_listen == "0.0.0.0:8090"


@pytest.mark.parametrize(
    ("slack", "said"),
    [
        ({"channel": "C0HOLDS01", "bot_token_env": "T"}, "give signing_secret_file"),
        ({**SLACK, "bot_token_file": "/x"}, "give bot_token_file"),
        ({**SLACK, "channel": "#holds"}, "slack.channel"),
    ],
)
def test_slack_settings_are_checked(tmp_path: Path, slack: dict[str, Any], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        config(tmp_path, slack=slack, chat_listen="127.0.0.1:8090")


def test_serve_flags_and_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "guardproxy.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "slack": SLACK,
                "oncall": {
                    "rotations": str(tmp_path / "oncall.yaml"),
                    "schedules": {"platform-primary": {"escalate_to": "platform-secondary"}},
                },
            }
        )
    )
    args = build_parser().parse_args(
        [
            "serve",
            "--config",
            str(path),
            "--data-dir",
            str(tmp_path),
            "--chat-listen",
            "127.0.0.1:8090",
        ]
    )
    built = build_config(args)
    assert built.chat_listen == "127.0.0.1:8090" and built.oncall.configured()
    path.write_text(yaml.safe_dump({"oncall": {"schedules": {"p": {"pager": {"kind": "x"}}}}}))
    with pytest.raises(ConfigError) as refused:
        build_config(build_parser().parse_args(["serve", "--config", str(path)]))
    assert "oncall.schedules.p.pager" in str(refused.value) and "\n" not in str(refused.value)

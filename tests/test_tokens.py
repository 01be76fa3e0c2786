"""Tokens guardproxy issues carry a fixed prefix (never a leading `-`, recognisable when
leaked), and every option taking a secret accepts one that starts with `-`."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from guardproxy.cli.main import SECRET_OPTIONS, build_parser, join_secret_values, parse
from guardproxy.redact import redact_text
from guardproxy.server import new_control_token
from guardproxy.session.registry import SessionRegistry, new_session_token
from guardproxy.store import open_store

TOKEN = re.compile(r"^gp[acs]_[A-Za-z0-9_-]{32,}$")
DASHED = "-6GB3x_oldTokenThatStartsWithADash"


def test_control_and_session_tokens_have_a_prefix(tmp_path: Path) -> None:
    for _ in range(200):  # a leading `-` was one in 64 before
        assert TOKEN.match(new_control_token()) and new_control_token().startswith("gpc_")
        assert TOKEN.match(new_session_token()) and new_session_token().startswith("gps_")
    store = open_store(f"sqlite:///{tmp_path / 'g.db'}")
    try:
        _, credential = SessionRegistry(store).create(
            name="n", user="u", command=["x"], cwd="/", labels=[], now=datetime.now(UTC)
        )
    finally:
        store.close()
    assert credential.token.startswith("gps_")


def test_leaked_tokens_are_redacted_from_logs() -> None:
    for token in (new_control_token(), new_session_token(), "gpa_" + "Ab1-" * 10):
        assert token not in redact_text(f"token leaked: {token} (end)")


@pytest.mark.parametrize(
    ("argv", "joined"),
    [
        (["holds", "--token", DASHED], ["holds", f"--token={DASHED}"]),
        (["holds", "--token", "gpa_x"], ["holds", "--token", "gpa_x"]),
        (["run", "--", "tool", "--token", "-x"], ["run", "--", "tool", "--token", "-x"]),
        (["run", "--token", "-t", "--", "a", "--token", "-x"],
         ["run", "--token=-t", "--", "a", "--token", "-x"]),
        (["holds", "--token"], ["holds", "--token"]),
    ],
)  # fmt: skip
def test_join_secret_values(argv: list[str], joined: list[str]) -> None:
    assert join_secret_values(argv) == joined


@pytest.mark.parametrize(
    "argv",
    [
        ["holds", "--token", DASHED],
        ["approve", "h-aaaaaaaaaa", "--reason", "x", "--token", DASHED],
        ["deny", "h-aaaaaaaaaa", "--token", DASHED, "--reason", "x"],
        ["policy", "reload", "--token", DASHED, "--json"],
        ["env", "--token", DASHED],
        ["run", "--token", DASHED, "--proxy", "http://127.0.0.1:1", "--", "true"],
    ],
)
def test_every_secret_option_takes_a_value_starting_with_a_dash(argv: list[str]) -> None:
    assert parse(build_parser(argv), argv).token == DASHED


def test_every_token_option_is_known_as_a_secret() -> None:
    """A new `--...token...` option must be added to SECRET_OPTIONS."""
    parser = build_parser([])
    found: set[str] = set()
    stack = [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            found.update(o for o in action.option_strings if "token" in o or "secret" in o)
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    # file and variable names of secrets are not secrets themselves
    assert found - {"--notify-secret-file", "--notify-secret-env"} == set(SECRET_OPTIONS)


def test_the_command_of_run_keeps_its_own_arguments() -> None:
    argv = ["run", "--proxy", "http://127.0.0.1:1", "--", "tool", "--token", "-x"]
    assert parse(build_parser(argv), argv).command == ["--", "tool", "--token", "-x"]


def test_other_argument_errors_are_reported_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(build_parser(["holds"]), ["holds", "--token"])
    assert exited.value.code == 2
    assert "argument --token: expected one argument" in capsys.readouterr().err

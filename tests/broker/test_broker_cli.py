"""The broker at start-up, as the CLI shows it: a real credential that cannot be resolved
stops `serve` and `run` with one line naming it (the real CLI, as a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def start(tmp_path: Path, command: str, *argv: str, env: dict[str, str]) -> tuple[int, str]:
    """`guardproxy COMMAND` with a user who has no credentials: exit code, error line."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("GUARDPROXY_", "AWS_", "GH_", "GITHUB_"))}  # fmt: skip
    clean.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true", PATH="/usr/bin:/bin", **env)
    listen = ["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"] if command == "serve" else []
    tail = ["--", "true"] if command == "run" else []
    done = subprocess.run(
        [sys.executable, "-m", "guardproxy", command, "--data-dir", str(tmp_path / "data"),
         "--policies", str(ROOT / "policies"), *listen, *argv, *tail],
        env=clean, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90,
        check=False, cwd=tmp_path,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, done.stderr
    return done.returncode, lines[0]


@pytest.mark.parametrize("command", ["serve", "run"])
@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--broker", "aws"], {}, "brokers.aws.profiles.default: AWS default credential chain: "
                                  "botocore found no credentials"),
        (["--broker", "github"], {}, "brokers.github: GitHub token from `gh auth token`: gh is "
                                     "not installed or not on PATH"),
        (["--broker", "azure"], {}, "brokers.azure: Azure token from `az account "
                                    "get-access-token`: az is not installed"),
    ],
    ids=["aws", "github", "azure"],
)  # fmt: skip
def test_an_unresolvable_credential_is_a_one_line_start_up_error(
    tmp_path: Path, command: str, argv: list[str], env: dict[str, str], named: str
) -> None:
    code, line = start(tmp_path, command, *argv, env=env)
    assert code == 2
    assert line.startswith("guardproxy: a brokered credential cannot be resolved: "), line
    assert named in line, line
    assert "remove the provider from brokers:" in line


def test_a_profile_named_in_the_config_file_must_exist(tmp_path: Path) -> None:
    config = tmp_path / "guardproxy.yaml"
    config.write_text("brokers:\n  aws:\n    profiles: {default: '', prod: prod-admin}\n")
    (tmp_path / "home" / ".aws").mkdir(parents=True)
    (tmp_path / "home" / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = x\n"
    )
    code, line = start(tmp_path, "serve", "--config", str(config), env={})
    assert code == 2 and "brokers.aws.profiles.prod: AWS profile 'prod-admin'" in line, line


def test_a_bad_brokers_section_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "guardproxy.yaml"
    config.write_text("brokers:\n  github:\n    token: magic\n")
    code, line = start(tmp_path, "serve", "--config", str(config), env={})
    assert code == 2 and "brokers.github.token" in line and "env:NAME" in line, line

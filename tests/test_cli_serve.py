"""`guardproxy serve` options that reach the proxy's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardproxy.cli.main import build_parser, main
from guardproxy.cli.serve import ConfigError, build_config
from guardproxy.cli.session_setup import store_files
from guardproxy.config import ProxyConfig


def config_of(*argv: str) -> ProxyConfig:
    args = build_parser(["serve"]).parse_args(["serve", *argv])
    return build_config(args)


def test_destructive_budget_flag_sets_the_session_budget(tmp_path: Path) -> None:
    base = ("--data-dir", str(tmp_path), "--policies", str(tmp_path))
    assert config_of(*base).destructive_budget == 10
    assert config_of(*base, "--destructive-budget", "3").destructive_budget == 3
    settings = tmp_path / "guard.yaml"
    settings.write_text("destructive_budget: 7\n")
    from_file = config_of(*base, "--config", str(settings))
    assert from_file.destructive_budget == 7
    flag_wins = config_of(*base, "--config", str(settings), "--destructive-budget", "2")
    assert flag_wins.destructive_budget == 2
    with pytest.raises(ConfigError, match="destructive_budget"):
        config_of(*base, "--destructive-budget", "0")


def test_an_invalid_budget_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--data-dir", str(tmp_path), "--destructive-budget", "0"])
    assert code == 2
    assert "destructive_budget" in capsys.readouterr().err


def test_the_data_directory_store_syncs_every_commit_only_when_asked(tmp_path: Path) -> None:
    base = ("--data-dir", str(tmp_path), "--policies", str(tmp_path))
    database = f"sqlite:///{(tmp_path / 'guardproxy.db').resolve()}"
    assert config_of(*base).store_url == database
    full = config_of(*base, "--sqlite-synchronous", "full")
    assert full.store_url == f"{database}?synchronous=full"
    assert store_files(full.store_url)[0].resolve() == (tmp_path / "guardproxy.db").resolve()
    settings = tmp_path / "guard.yaml"
    settings.write_text("sqlite_synchronous: full\nstore: sqlite:///elsewhere.db\n")
    assert config_of(*base, "--config", str(settings)).store_url == "sqlite:///elsewhere.db"
    with pytest.raises(ConfigError, match="sqlite_synchronous"):
        settings.write_text("sqlite_synchronous: off\n")
        config_of(*base, "--config", str(settings))

"""``guardproxy approvers link|unlink`` on a real store: identities checked for their
shape, emails kept in lower case, one identity per approver, shown by ``list``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardproxy.cli.main import main
from guardproxy.store import open_store


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    open_store(str(directory / "guardproxy.db")).close()
    for name in ("alice", "bob"):
        code, _, err = run(capsys, "approvers", "add", name, "--group", "senior",
                           "--data-dir", str(directory))  # fmt: skip
        assert code == 0, err
    return directory


def test_link_list_and_unlink(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ("--data-dir", str(data_dir))
    code, out, err = run(capsys, "approvers", "link", "alice", "--slack", "U024BE7LH",
                         "--pagerduty", "Alice@Example.COM", *where)  # fmt: skip
    assert code == 0, err
    assert out.splitlines() == [
        "linked alice to slack U024BE7LH",
        "linked alice to pagerduty alice@example.com",
    ]
    code, out, _ = run(capsys, "approvers", "list", "--json", *where)
    (alice, bob) = json.loads(out)["approvers"]
    assert alice["links"] == {"pagerduty": "alice@example.com", "slack": "U024BE7LH"}
    assert bob["links"] == {}
    code, out, _ = run(capsys, "approvers", "list", *where)
    assert "alice  groups: senior  pagerduty: alice@example.com  slack: U024BE7LH" in out
    code, _, err = run(capsys, "approvers", "link", "bob", "--slack", "U024BE7LH", *where)
    assert code == 1 and "is linked to alice" in err and "unlink it there first" in err
    code, out, _ = run(capsys, "approvers", "unlink", "alice", "--slack", *where)
    assert code == 0 and out.strip() == "unlinked alice from slack"
    code, _, err = run(capsys, "approvers", "link", "bob", "--slack", "U024BE7LH", *where)
    assert code == 0, err
    store = open_store(str(data_dir / "guardproxy.db"))
    try:
        found = store.find_approver_by_link("slack", "U024BE7LH")
        assert found is not None and found.name == "bob"
    finally:
        store.close()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["alice", "--slack", "alice"], "expected a Slack user id"),
        (["alice", "--opsgenie", "alice"], "expected an Opsgenie username"),
        (["alice", "--pagerduty", "not an id"], "expected a PagerDuty user id"),
        (["alice"], "give --slack USER_ID"),
        (["nobody", "--slack", "U0NOBODY1"], "no approver named nobody"),
    ],
)
def test_link_mistakes_are_one_line(
    data_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    code, _, err = run(capsys, "approvers", "link", *argv, "--data-dir", str(data_dir))
    assert code == 1 and said in err and err.count("\n") == 1


def test_unlinking_what_is_not_linked_is_said(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "approvers", "unlink", "bob", "--opsgenie",
                       "--data-dir", str(data_dir))  # fmt: skip
    assert code == 1 and "bob has no opsgenie link" in err

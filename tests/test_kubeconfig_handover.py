"""Root mode hands the guard (another user) the kubeconfig with its files read in."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from guardproxy.session.environment import self_contained_kubeconfig


def _write(path: Path, config: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_every_file_a_kubeconfig_names_is_read_in_relative_to_its_own_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "ca.pem").write_bytes(b"CA-A")
    (tmp_path / "a" / "client.pem").write_bytes(b"CERT-A")
    (tmp_path / "a" / "client.key").write_bytes(b"KEY-A")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "token").write_text("token-b\n")
    first = _write(tmp_path / "a" / "config", {
        "clusters": [{"name": "c", "cluster": {"server": "https://x",
                                               "certificate-authority": "ca.pem"}}],
        "users": [{"name": "u", "user": {"client-certificate": "client.pem",
                                          "client-key": "client.key"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    })  # fmt: skip
    second = _write(tmp_path / "b" / "config", {
        "users": [{"name": "u", "user": {"token": "shadowed"}},
                  {"name": "t", "user": {"tokenFile": "token"}}],
    })  # fmt: skip
    merged = self_contained_kubeconfig([first, second])
    cluster = merged["clusters"][0]["cluster"]
    assert "certificate-authority" not in cluster
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA-A"
    users = {u["name"]: u["user"] for u in merged["users"]}
    assert base64.b64decode(users["u"]["client-certificate-data"]) == b"CERT-A"
    assert base64.b64decode(users["u"]["client-key-data"]) == b"KEY-A"
    assert "client-certificate" not in users["u"] and "token" not in users["u"]
    assert users["t"] == {"token": "token-b"}
    assert merged["current-context"] == "c"


def test_a_file_that_cannot_be_read_is_an_error_not_a_user_without_credentials(
    tmp_path: Path,
) -> None:
    config = _write(tmp_path / "config", {
        "users": [{"name": "u", "user": {"client-certificate": "missing.pem"}}],
    })  # fmt: skip
    with pytest.raises(OSError):
        self_contained_kubeconfig([config])

"""``guardproxy serve`` runs one decision writer process, and never leaves it behind."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from guardproxy.config import ProxyConfig
from guardproxy.server import Guardproxy, StartError

ROOT = Path(__file__).resolve().parents[2]


def writer_processes() -> list[int]:
    """This process's children running the decision writer."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # ended while we looked
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if parent == os.getpid() and state != "Z" and b"guardproxy.gate.writer" in command:
            found.append(int(entry.name))
    return found


def config(tmp_path: Path, policies: Path) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "data_dir": tmp_path / "data",
            "policies": policies,
            "listen": "127.0.0.1:0",
            "control": "127.0.0.1:0",
        }
    )


def test_serve_runs_one_writer_process_and_stop_ends_it(tmp_path: Path) -> None:
    service = Guardproxy(config(tmp_path, ROOT / "policies"))

    async def start_and_stop() -> list[int]:
        await service.start()
        try:
            return writer_processes()
        finally:
            await service.stop()

    assert len(asyncio.run(start_and_stop())) == 1
    assert writer_processes() == []


def test_a_start_that_fails_while_the_writer_starts_leaves_no_writer(tmp_path: Path) -> None:
    broken = tmp_path / "policies"
    broken.mkdir()
    (broken / "rules.yaml").write_text("rules: [ {id: x, decision: maybe\n")
    service = Guardproxy(config(tmp_path, broken))
    with pytest.raises(StartError, match="has errors"):
        asyncio.run(service.start())
    assert writer_processes() == []

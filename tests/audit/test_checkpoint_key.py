"""The key that signs audit checkpoints (a file outside the database), the checkpointer
``guardproxy serve`` runs, and the ``audit checkpoint`` / ``audit key`` commands."""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from guardproxy.audit.checkpoint import (
    AuditKeyError,
    Checkpointer,
    load_or_create_signing_key,
    load_signing_key,
    load_verify_key,
)
from guardproxy.cli.main import main
from guardproxy.store import DecisionRecord, SqliteStore
from guardproxy.store.chain import signed_message

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
Capsys = pytest.CaptureFixture[str]


def _decision(decision_id: str) -> DecisionRecord:
    return DecisionRecord(
        id=decision_id, at=T0, session_id="s", action_json="{}", context_json="{}",
        decision_json="{}", outcome="allow",
    )  # fmt: skip


def test_the_key_is_created_private_with_its_public_line(tmp_path: Path) -> None:
    path = tmp_path / "data" / "audit-key"
    key = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in path.read_bytes()
    public = path.with_name("audit-key.pub").read_text()
    assert public == f"guardproxy-audit-ed25519 {public.split()[1]} {key.key_id}\n"
    assert len(key.key_id) == 16
    again = load_or_create_signing_key(path)  # the same key the next time
    assert again.key_id == key.key_id
    for source in (path, path.with_name("audit-key.pub")):
        assert load_verify_key(source).key_id == key.key_id
    pem = tmp_path / "public.pem"
    pem.write_bytes(
        key.verify_key.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert load_verify_key(pem).key_id == key.key_id


def test_a_signature_covers_the_checkpoint_hash_in_its_own_context(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "audit-key")
    digest = "ab" * 32
    signature = bytes.fromhex(key.sign(digest))
    key.verify_key.public.verify(signature, signed_message(digest))  # raises if not
    assert signed_message(digest) != digest.encode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a key", "is not an audit key"),
        (b"guardproxy-audit-ed25519 !!!", "not a valid guardproxy-audit-ed25519 line"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "is not an"),
    ],
)
def test_a_bad_key_file_is_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "audit-key"
    path.write_bytes(content)
    with pytest.raises(AuditKeyError, match=message) as raised:
        load_verify_key(path)
    assert "\n" not in str(raised.value)
    with pytest.raises(AuditKeyError):
        load_signing_key(path)
    with pytest.raises(AuditKeyError, match="cannot read"):
        load_verify_key(tmp_path / "missing")


def test_the_checkpointer_checkpoints_every_interval_and_at_the_end(tmp_path: Path) -> None:
    now = [T0]
    with SqliteStore(tmp_path / "guardproxy.db") as store:
        key = load_or_create_signing_key(tmp_path / "audit-key")
        checkpointer = Checkpointer(store, key, clock=lambda: now[0], interval=10)
        store.append_decision(_decision("d-1"))
        assert checkpointer.checkpoint() is not None
        store.append_decision(_decision("d-2"))
        now[0] = T0 + timedelta(seconds=5)
        assert checkpointer.checkpoint() is None  # another replica's would do as well
        now[0] = T0 + timedelta(seconds=9.5)  # a turn that comes a little early still counts
        made = checkpointer.checkpoint()
        assert made is not None and made.seq == 2 and made.key_id == key.key_id
        store.append_decision(_decision("d-3"))
        checkpointer.final()  # forced, whatever the time
        assert [c.seq for c in store.audit_checkpoints()] == [1, 2, 3]

        async def run_briefly() -> None:
            quick = Checkpointer(store, key, clock=lambda: datetime.now(UTC), interval=0.05)
            task = asyncio.create_task(quick.run())
            store.append_decision(_decision("d-4"))
            for _ in range(100):
                await asyncio.sleep(0.02)
                if len(store.audit_checkpoints()) == 4:
                    break
            task.cancel()

        asyncio.run(run_briefly())
        assert len(store.audit_checkpoints()) == 4


def test_checkpoint_and_key_commands(tmp_path: Path, capsys: Capsys) -> None:
    data_dir = tmp_path / "data"
    with SqliteStore(data_dir / "guardproxy.db") as store:
        store.append_decision(_decision("d-1"))
    args = ["--data-dir", str(data_dir)]
    assert main(["audit", "checkpoint", *args]) == 0
    out = capsys.readouterr().out
    assert out.startswith("checkpoint 1:") and "binds 1 chain head(s), signed by key" in out
    assert main(["audit", "checkpoint", *args]) == 0
    assert capsys.readouterr().out == (
        "nothing to checkpoint: no chain moved since the last checkpoint\n"
    )
    assert main(["audit", "key", *args]) == 0
    line = capsys.readouterr().out
    assert line == (data_dir / "audit-key.pub").read_text()
    assert main(["audit", "verify", *args]) == 0  # the data directory's key by default
    out = capsys.readouterr().out
    key_id = line.split()[2]
    assert f"checkpoint signatures checked (key {key_id})" in out
    assert "not yet checkpointed" not in out
    (data_dir / "audit-key").unlink()
    (data_dir / "audit-key.pub").unlink()
    assert main(["audit", "verify", *args]) == 0
    assert "checkpoint signatures NOT checked: no key" in capsys.readouterr().out
    assert main(["audit", "key", *args]) == 2
    assert "cannot read the key" in capsys.readouterr().err

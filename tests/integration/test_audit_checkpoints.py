"""Signed audit checkpoints: a trail cut short, a chain deleted, everything deleted, events
deleted in the middle or reordered, a forged checkpoint or key: each named; honest growth
after the last checkpoint is not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.crypto.keystore import SoftwareKeyStore
from app.models import AuditChainHead, AuditEvent, CertificateAuthority
from app.runtime import Runtime
from app.services.audit.checkpoint import (
    CHECKPOINT_KEY_ID,
    CheckpointKey,
    expected_heads,
    read_checkpoints,
    take_checkpoint,
)
from app.services.audit.verification import AuditVerification, verify_audit_trail
from app.services.lifecycle.jobs import AuditCheckpoints
from tests.conftest import Cli
from tests.integration.test_audit import MYKADS, audit_log, seed


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints"


def checkpoint(runtime: Runtime, directory: Path, clock: FrozenClock) -> None:
    assert take_checkpoint(runtime.sessions, runtime.key_store, directory, clock.now())


def verified(runtime: Runtime, directory: Path) -> AuditVerification:
    with runtime.sessions() as session:
        public_key = CheckpointKey(session, runtime.key_store).verifying_key()
    reading = read_checkpoints(directory, public_key)
    assert reading.problems == []
    with runtime.sessions() as session:
        return verify_audit_trail(
            session, runtime.keys.audit_mac, checkpoints=expected_heads(reading.checkpoints)
        )


def broken(runtime: Runtime, directory: Path) -> str:
    result = verified(runtime, directory)
    assert not result.ok and result.first_broken is not None
    return f"chain {result.first_broken.chain}: {result.first_broken.reason}"


def busiest_chain(sessions: sessionmaker[Session]) -> tuple[int, list[AuditEvent]]:
    with sessions() as session:
        chain = session.scalars(
            select(AuditEvent.chain).group_by(AuditEvent.chain).order_by(func.count().desc())
        ).first()
        assert chain is not None
        events = list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)
            )
        )
    return chain, events


def grow(runtime: Runtime, clock: FrozenClock, count: int = 4) -> None:
    with runtime.sessions() as session:
        log = audit_log(session, runtime.keys)
        for n in range(count):
            log.record(now=clock.advance(seconds=1), action="later", actor="cli", mykad=MYKADS[n])
            session.commit()


def test_an_honest_trail_that_grew_after_the_last_checkpoint_verifies(
    runtime: Runtime, directory: Path, clock: FrozenClock
) -> None:
    seed(runtime.sessions, runtime.keys, clock)
    checkpoint(runtime, directory, clock)
    grow(runtime, clock)
    checkpoint(runtime, directory, clock)
    grow(runtime, clock)
    result = verified(runtime, directory)
    assert result.ok and result.checked == 12 + 8
    [day] = directory.glob("audit-checkpoints-*.jsonl")
    lines = [json.loads(line) for line in day.read_text().splitlines()]
    assert [line["events"] for line in lines] == [12, 16]
    assert lines[0]["chains"] == len(lines[0]["heads"]) >= 2
    assert {"created_at", "heads", "key", "signature", "version"} <= lines[0].keys()


def test_the_last_events_deleted_and_the_head_moved_back(
    runtime: Runtime, directory: Path, clock: FrozenClock, engine: Engine
) -> None:
    seed(runtime.sessions, runtime.keys, clock)
    checkpoint(runtime, directory, clock)
    chain, events = busiest_chain(runtime.sessions)
    kept = events[-2]
    with engine.begin() as connection:  # the attack of issue 20, on a copy without the key
        connection.execute(delete(AuditEvent).where(AuditEvent.id == events[-1].id))
        connection.execute(
            update(AuditChainHead)
            .where(AuditChainHead.chain == chain)
            .values(seq=kept.seq, mac=kept.mac)
        )
    with runtime.sessions() as session:  # the chains alone cannot tell
        assert verify_audit_trail(session, runtime.keys.audit_mac).ok
    assert broken(runtime, directory) == (
        f"chain {chain}: chain {chain} ends at seq {kept.seq}, before checkpoint "
        f"audit-checkpoints-{clock.now():%Y-%m-%d}.jsonl:1 at seq {events[-1].seq}: "
        "events deleted from its end"
    )


def test_a_whole_chain_deleted_with_its_head(
    runtime: Runtime, directory: Path, clock: FrozenClock, engine: Engine
) -> None:
    seed(runtime.sessions, runtime.keys, clock)
    checkpoint(runtime, directory, clock)
    chain, events = busiest_chain(runtime.sessions)
    with engine.begin() as connection:
        connection.execute(delete(AuditEvent).where(AuditEvent.chain == chain))
        connection.execute(delete(AuditChainHead).where(AuditChainHead.chain == chain))
    with runtime.sessions() as session:
        assert verify_audit_trail(session, runtime.keys.audit_mac).ok
    assert f"chain {chain} is missing" in broken(runtime, directory)
    assert f"at seq {events[-1].seq}" in broken(runtime, directory)


def test_everything_deleted(
    runtime: Runtime, directory: Path, clock: FrozenClock, engine: Engine
) -> None:
    seed(runtime.sessions, runtime.keys, clock)
    checkpoint(runtime, directory, clock)
    with engine.begin() as connection:
        connection.execute(delete(AuditEvent))
        connection.execute(delete(AuditChainHead))
    with runtime.sessions() as session:
        assert verify_audit_trail(session, runtime.keys.audit_mac).ok
    assert "(the trail is empty)" in broken(runtime, directory)


def test_events_deleted_in_the_middle_or_reordered(
    runtime: Runtime, directory: Path, clock: FrozenClock, engine: Engine
) -> None:
    seed(runtime.sessions, runtime.keys, clock)
    checkpoint(runtime, directory, clock)
    _chain, events = busiest_chain(runtime.sessions)
    first, second = events[0], events[1]
    with engine.begin() as connection:
        for event, seq in ((first, -1), (second, first.seq), (first, second.seq)):
            connection.execute(update(AuditEvent).where(AuditEvent.id == event.id).values(seq=seq))
    assert "reordered" in broken(runtime, directory)
    with engine.begin() as connection:
        for event, seq in ((first, -1), (second, second.seq), (first, first.seq)):
            connection.execute(update(AuditEvent).where(AuditEvent.id == event.id).values(seq=seq))
    assert verified(runtime, directory).ok
    with engine.begin() as connection:
        connection.execute(delete(AuditEvent).where(AuditEvent.id == second.id))
    assert f"seq {second.seq}..{second.seq} missing" in broken(runtime, directory)


def test_a_changed_checkpoint_a_replaced_key_and_a_deleted_key_are_refused(
    runtime: Runtime, directory: Path, clock: FrozenClock, engine: Engine
) -> None:
    seed(runtime.sessions, runtime.keys, clock)
    checkpoint(runtime, directory, clock)
    [day] = directory.glob("audit-checkpoints-*.jsonl")
    honest = day.read_text()
    line = json.loads(honest)
    line["heads"][0]["seq"] -= 1  # moved back to match a cut trail, consistently
    line["events"] -= 1
    day.write_text(json.dumps(line) + "\n")
    with runtime.sessions() as session:
        public_key = CheckpointKey(session, runtime.key_store).verifying_key()
    [problem] = read_checkpoints(directory, public_key).problems
    assert "the signature is wrong" in problem and f"{day.name}:1" in problem
    day.write_text(honest)

    # Another key in the row: the key store does not hold its private half.
    impostor = SoftwareKeyStore(b"\x01" * 32).generate(CHECKPOINT_KEY_ID, "ecdsa-p256")
    with runtime.sessions.begin() as session:
        row = session.get(CertificateAuthority, CHECKPOINT_KEY_ID)
        assert row is not None
        original = row.certificate_pem, row.key_blob
        row.key_blob = impostor.blob
    with runtime.sessions() as session, pytest.raises(LookupError, match="cannot use"):
        CheckpointKey(session, runtime.key_store).verifying_key()
    with runtime.sessions.begin() as session:
        row = session.get(CertificateAuthority, CHECKPOINT_KEY_ID)
        assert row is not None
        row.key_blob = original[1]
        row.certificate_pem = impostor.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
    with runtime.sessions() as session, pytest.raises(LookupError, match="was replaced"):
        CheckpointKey(session, runtime.key_store).verifying_key()
    with engine.begin() as connection:
        connection.execute(
            delete(CertificateAuthority).where(CertificateAuthority.name == CHECKPOINT_KEY_ID)
        )
    with runtime.sessions() as session, pytest.raises(LookupError, match="no audit checkpoint"):
        CheckpointKey(session, runtime.key_store).verifying_key()


def test_the_job_writes_one_every_n_events_or_m_minutes(
    runtime: Runtime, directory: Path, clock: FrozenClock
) -> None:
    runtime.settings.audit_checkpoint_dir = directory
    runtime.settings.audit_checkpoint_every_events = 10
    runtime.settings.audit_checkpoint_interval_seconds = 600
    job = AuditCheckpoints(runtime.sessions, runtime.key_store, runtime.settings)
    assert job(clock.now()).startswith("audit checkpoint: 0 chains")  # the first one, at once
    seed(runtime.sessions, runtime.keys, clock)  # 12 events
    assert job(clock.now()).startswith("audit checkpoint:")
    grow(runtime, clock, 4)
    assert job(clock.now()) == "audit checkpoint: not due"
    clock.advance(minutes=10)
    assert job(clock.now()).startswith("audit checkpoint:")
    assert verified(runtime, directory).ok


def test_the_cli_writes_a_checkpoint_and_verifies_against_the_directory(
    runtime: Runtime, clock: FrozenClock, cli: Cli, tmp_path: Path, engine: Engine
) -> None:
    seed(runtime.sessions, runtime.keys, clock)
    written = cli("audit", "checkpoint").stdout
    assert "audit checkpoint: " in written and "12 events" in written
    directory = tmp_path / "audit-checkpoints"  # the default under the var dir
    assert (
        "intact: 12 events checked against 1 checkpoints"
        in cli("audit", "verify", "--checkpoints", str(directory)).stdout
    )
    chain, _events = busiest_chain(runtime.sessions)
    with engine.begin() as connection:
        connection.execute(delete(AuditEvent).where(AuditEvent.chain == chain))
        connection.execute(delete(AuditChainHead).where(AuditChainHead.chain == chain))
    assert "intact" in cli("audit", "verify").stdout  # without the checkpoints: fooled
    refused = cli("audit", "verify", "--checkpoints", str(directory), expect=1).stderr
    assert f"chain {chain} is missing" in refused

"""The audit trail on a real database: MAC chains, tampering detected, concurrent writers."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Engine, event, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.crypto.keys import Secrets
from app.models import AuditChainHead, AuditEvent
from app.services.audit import log as audit_log_module
from app.services.audit.event import subject_ref
from app.services.audit.log import AuditLog, chain_for
from app.services.audit.trail import query_events
from app.services.audit.verification import AuditVerification, verify_audit_trail

CHAINS = 16
MYKADS = ["850101145555", "900215086666", "771231017777", "020304148888"]
CONTENT_COLUMNS = (
    "occurred_at",
    "action",
    "actor",
    "subject_ref",
    "mykad_masked",
    "target_id",
    "outcome",
    "details",
    "mac",
)


def audit_log(session: Session, keys: Secrets, chains: int = CHAINS) -> AuditLog:
    return AuditLog(session, keys.audit_mac, keys.subject_ref, chains=chains)


def verify(sessions: sessionmaker[Session], keys: Secrets) -> AuditVerification:
    with sessions() as session:
        return verify_audit_trail(session, keys.audit_mac)


def seed(sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock) -> list[int]:
    """Three events for each of four people, one transaction each; returns their ids."""
    ids = []
    with sessions() as session:
        log = audit_log(session, keys)
        for step in ("otp.issued", "otp.check.rejected", "signature.created"):
            for number, mykad in enumerate(MYKADS):
                event = log.record(
                    now=clock.advance(seconds=1),
                    action=step,
                    actor="client:agency-a",
                    outcome="pin_wrong" if step == "otp.check.rejected" else "ok",
                    mykad=mykad,
                    target_id=f"request-{number}",
                    details={"attempt": 1, "channel": "sms", "request_locked": False},
                )
                session.commit()
                ids.append(event.id)
    return ids


def events_of_chain(engine: Engine, chain: int) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)
            )
        )


def busiest_chain(engine: Engine) -> list[AuditEvent]:
    with Session(engine) as session:
        chains = session.scalars(select(AuditEvent.chain).distinct()).all()
    return max((events_of_chain(engine, chain) for chain in chains), key=len)


def tamper(engine: Engine, sql: str, **params: object) -> None:
    """What someone with write access to the database, but not the master key, can do."""
    with engine.begin() as connection:
        connection.execute(text(sql), params)


def test_recorded_events_verify(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, engine: Engine
) -> None:
    ids = seed(sessions, keys, clock)

    result = verify(sessions, keys)

    assert result == AuditVerification(ok=True, checked=12, first_broken=None)
    with Session(engine) as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        heads = {head.chain: head for head in session.scalars(select(AuditChainHead))}
    assert [row.id for row in rows] == ids
    assert len({row.chain for row in rows}) > 1
    by_chain: dict[int, list[AuditEvent]] = defaultdict(list)
    for row in rows:
        by_chain[row.chain].append(row)
    for chain, events in by_chain.items():
        assert [event.seq for event in events] == list(range(1, len(events) + 1))
        assert (heads[chain].seq, heads[chain].mac) == (events[-1].seq, events[-1].mac)
    first = rows[0]
    assert first.subject_ref == subject_ref(keys.subject_ref, MYKADS[0])
    assert first.mykad_masked == "********5555"
    assert first.occurred_at == clock.now() - timedelta(seconds=11)
    assert first.details == {"attempt": 1, "channel": "sms", "request_locked": False}


def test_changed_outcome_names_the_event(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, engine: Engine
) -> None:
    ids = seed(sessions, keys, clock)
    changed = ids[5]
    tamper(engine, "UPDATE audit_events SET outcome = 'ok' WHERE id = :id", id=changed)

    result = verify(sessions, keys)

    assert not result.ok
    assert result.checked == 12
    assert result.breaks == 1
    assert result.first_broken is not None
    assert result.first_broken.event_id == changed
    assert "MAC mismatch" in result.first_broken.reason


def test_deleted_middle_event_is_found(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, engine: Engine
) -> None:
    seed(sessions, keys, clock)
    events = busiest_chain(engine)
    assert len(events) >= 3
    tamper(engine, "DELETE FROM audit_events WHERE id = :id", id=events[1].id)

    result = verify(sessions, keys)

    assert not result.ok
    assert result.first_broken is not None
    assert result.first_broken.event_id == events[2].id
    assert (result.first_broken.chain, result.first_broken.seq) == (events[2].chain, 3)
    assert "seq 2..2 missing" in result.first_broken.reason


def test_deleted_last_event_breaks_the_head(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, engine: Engine
) -> None:
    seed(sessions, keys, clock)
    events = busiest_chain(engine)
    last = events[-1]
    tamper(engine, "DELETE FROM audit_events WHERE id = :id", id=last.id)

    result = verify(sessions, keys)

    assert not result.ok
    assert result.breaks == 1
    assert result.first_broken is not None
    assert result.first_broken.event_id is None
    assert (result.first_broken.chain, result.first_broken.seq) == (last.chain, last.seq)
    assert "missing at the end" in result.first_broken.reason


def test_deleting_every_event_of_a_chain_is_found(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, engine: Engine
) -> None:
    seed(sessions, keys, clock)
    chain = busiest_chain(engine)[0].chain
    tamper(engine, "DELETE FROM audit_events WHERE chain = :chain", chain=chain)

    result = verify(sessions, keys)

    assert not result.ok
    assert result.first_broken is not None
    assert result.first_broken.chain == chain


def test_deleted_head_is_found(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, engine: Engine
) -> None:
    seed(sessions, keys, clock)
    last = busiest_chain(engine)[-1]
    tamper(engine, "DELETE FROM audit_chain_heads WHERE chain = :chain", chain=last.chain)

    result = verify(sessions, keys)

    assert not result.ok
    assert result.first_broken == (None, last.chain, last.seq, "the chain has events but no head")


def test_swapped_contents_are_a_reorder(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, engine: Engine
) -> None:
    seed(sessions, keys, clock)
    first, _second, third = busiest_chain(engine)[:3]
    with engine.begin() as connection:
        for target, source in ((first, third), (third, first)):
            values = {column: getattr(source, column) for column in CONTENT_COLUMNS}
            connection.execute(update(AuditEvent).where(AuditEvent.id == target.id).values(values))

    result = verify(sessions, keys)

    assert not result.ok
    assert result.first_broken is not None
    assert result.first_broken.event_id == first.id
    assert "MAC mismatch" in result.first_broken.reason


def test_renumbered_events_are_a_reorder(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, engine: Engine
) -> None:
    seed(sessions, keys, clock)
    first, second = busiest_chain(engine)[:2]
    # Swap the two seqs (through a free number: (chain, seq) is unique).
    tamper(engine, "UPDATE audit_events SET seq = -1 WHERE id = :id", id=first.id)
    tamper(engine, "UPDATE audit_events SET seq = 1 WHERE id = :id", id=second.id)
    tamper(engine, "UPDATE audit_events SET seq = 2 WHERE id = :id", id=first.id)

    result = verify(sessions, keys)

    assert not result.ok
    assert result.first_broken is not None
    assert result.first_broken.event_id == first.id


def test_forged_event_is_found(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, engine: Engine
) -> None:
    seed(sessions, keys, clock)
    last = busiest_chain(engine)[-1]
    forged_mac = "ab" * 32
    tamper(
        engine,
        "INSERT INTO audit_events (chain, seq, occurred_at, action, actor, outcome, details, mac)"
        " VALUES (:chain, :seq, :at, 'credential.unlocked', 'admin', 'ok', '{}', :mac)",
        chain=last.chain,
        seq=last.seq + 1,
        at=clock.now().replace(tzinfo=None),
        mac=forged_mac,
    )
    tamper(
        engine,
        "UPDATE audit_chain_heads SET seq = :seq, mac = :mac WHERE chain = :chain",
        chain=last.chain,
        seq=last.seq + 1,
        mac=forged_mac,
    )

    result = verify(sessions, keys)

    assert not result.ok
    assert result.first_broken is not None
    assert (result.first_broken.chain, result.first_broken.seq) == (last.chain, last.seq + 1)
    assert "MAC mismatch" in result.first_broken.reason


def test_a_wrong_key_verifies_nothing(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> None:
    ids = seed(sessions, keys, clock)

    with sessions() as session:
        result = verify_audit_trail(session, keys.subject_ref)

    assert not result.ok
    assert result.breaks == 12
    assert result.first_broken is not None
    assert result.first_broken.event_id == ids[0]


@pytest.mark.parametrize(
    "key", ["otp", "pin", "new_pin", "api_key", "apiKey", "password", "access_token", "Secret"]
)
def test_details_with_secret_looking_keys_are_refused(
    session: Session, keys: Secrets, clock: FrozenClock, key: str
) -> None:
    with pytest.raises(ValueError, match="secrets"):
        audit_log(session, keys).record(
            now=clock.now(), action="signature.created", actor="client:a", details={key: "x"}
        )


def test_ordinary_details_are_kept(session: Session, keys: Secrets, clock: FrozenClock) -> None:
    details: dict[str, str | int | bool | None] = {
        "key_algorithm": "rsa-2048",
        "certificate_serial": "0a1b2c",
        "held_until": clock.now().isoformat(),
        "failed_checks": 3,
        "request_locked": True,
        "channel": None,
    }

    event = audit_log(session, keys).record(
        now=clock.now(), action="credential.issued", actor="cli", details=details
    )

    assert event.details == details


@pytest.mark.parametrize(
    "details",
    [{"ratio": 0.5}, {"nested": {"a": 1}}, {"someone": "850101-14-5555"}],
    ids=["float", "nested", "mykad-value"],
)
def test_details_that_cannot_be_kept_exactly_are_refused(
    session: Session, keys: Secrets, clock: FrozenClock, details: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match="audit detail"):
        audit_log(session, keys).record(
            now=clock.now(),
            action="user.created",
            actor="cli",
            details=details,  # type: ignore[arg-type]
        )


def test_the_full_mykad_is_never_stored(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, engine: Engine
) -> None:
    seed(sessions, keys, clock)
    with sessions() as session:
        dashed = audit_log(session, keys).record(
            now=clock.now(), action="user.created", actor="cli", mykad="850101-14-5555"
        )
        session.commit()

    assert dashed.subject_ref == subject_ref(keys.subject_ref, "850101145555")
    with engine.connect() as connection:
        for table in ("audit_events", "audit_chain_heads"):
            for row in connection.execute(text(f"SELECT * FROM {table}")):
                stored = " ".join(str(value) for value in row)
                for mykad in MYKADS:
                    assert mykad not in stored


def test_record_never_commits(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> None:
    with sessions() as session:
        audit_log(session, keys).record(
            now=clock.now(), action="user.created", actor="cli", mykad=MYKADS[0]
        )
        session.rollback()

    with sessions() as session:
        assert session.scalars(select(AuditEvent)).all() == []
        assert session.scalars(select(AuditChainHead)).all() == []


def test_one_transaction_writes_one_chain(
    session: Session, keys: Secrets, clock: FrozenClock
) -> None:
    log = audit_log(session, keys)
    refs = [subject_ref(keys.subject_ref, mykad) for mykad in MYKADS]
    assert len({chain_for(ref, CHAINS) for ref in refs}) > 1

    events = [
        log.record(now=clock.now(), action="otp.check.rejected", actor="a", mykad=mykad)
        for mykad in MYKADS
    ]

    assert {event.chain for event in events} == {chain_for(refs[0], CHAINS)}
    assert [event.seq for event in events] == [1, 2, 3, 4]
    session.commit()
    later = log.record(now=clock.now(), action="user.created", actor="cli", mykad=MYKADS[1])
    assert later.chain == chain_for(refs[1], CHAINS)


def test_further_events_of_a_transaction_read_the_head_once(
    engine: Engine,
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    is_postgres: bool,
) -> None:
    statements: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    with sessions() as session:
        log = audit_log(session, keys)
        log.record(now=clock.now(), action="user.created", actor="cli", mykad=MYKADS[0])
        session.commit()  # the chain's head exists
        event.listen(engine, "before_cursor_execute", note)
        try:
            for _ in range(3):
                log.record(now=clock.now(), action="mail.delivered", actor="d", mykad=MYKADS[0])
        finally:
            event.remove(engine, "before_cursor_execute", note)
        session.commit()

    # This process wrote the head last, and then this transaction holds it: no event reads it.
    head_reads = [sql for sql in statements if sql.lstrip().startswith("SELECT")]
    assert head_reads == []
    # Each event is the head's conditional UPDATE and its INSERT: one statement on PostgreSQL
    # (a data-modifying WITH), two on SQLite.
    writes = [sql.split()[0] for sql in statements]
    writes = [word for word in writes if word != "BEGIN"]  # SQLite's BEGIN IMMEDIATE
    assert writes == (["WITH"] * 3 if is_postgres else ["UPDATE", "INSERT"] * 3), writes
    result = verify(sessions, keys)
    assert (result.ok, result.checked) == (True, 4)


def test_a_head_another_process_moved_is_read_again(
    engine: Engine, sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> None:
    with sessions() as session:
        audit_log(session, keys).record(now=clock.now(), action="a", actor="x", mykad=MYKADS[0])
        session.commit()
        remembered = dict(audit_log_module._LAST_HEADS)
        audit_log(session, keys).record(now=clock.now(), action="b", actor="x", mykad=MYKADS[0])
        session.commit()
    # As if the second event had been written by another process: this one knows the first.
    audit_log_module._LAST_HEADS.update(remembered)
    statements: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(" ".join(statement.split()))

    with sessions() as session:
        event.listen(engine, "before_cursor_execute", note)
        try:
            third = audit_log(session, keys).record(
                now=clock.now(), action="c", actor="x", mykad=MYKADS[0]
            )
        finally:
            event.remove(engine, "before_cursor_execute", note)
        session.commit()
    assert third.seq == 3
    assert (
        sum(sql.startswith("SELECT") and "FROM audit_chain_heads" in sql for sql in statements) == 1
    )
    result = verify(sessions, keys)
    assert (result.ok, result.checked) == (True, 3)


@pytest.mark.parametrize("savepoint_ends", ["rolled back", "released"])
def test_an_event_in_a_savepoint_leaves_the_head_right(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock, savepoint_ends: str
) -> None:
    with sessions() as session:
        log = audit_log(session, keys)
        log.record(now=clock.now(), action="user.created", actor="cli", mykad=MYKADS[0])
        savepoint = session.begin_nested()
        log.record(now=clock.now(), action="user.updated", actor="cli", mykad=MYKADS[0])
        if savepoint_ends == "rolled back":
            savepoint.rollback()
        else:
            savepoint.commit()
        last = log.record(now=clock.now(), action="user.deleted", actor="cli", mykad=MYKADS[0])
        session.commit()

    kept = 2 if savepoint_ends == "rolled back" else 3
    assert last.seq == kept
    result = verify(sessions, keys)
    assert (result.ok, result.checked) == (True, kept)


def test_a_long_lived_session_sees_heads_moved_by_others(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> None:
    # The sessions keep loaded objects across commits (expire_on_commit=False); a head taken
    # from the identity map would be stale here.
    with sessions() as first, sessions() as second:
        for session in (first, second, first, second, first):
            audit_log(session, keys).record(
                now=clock.advance(seconds=1), action="otp.issued", actor="a", mykad=MYKADS[0]
            )
            session.commit()

    result = verify(sessions, keys)
    assert result.ok
    assert result.checked == 5


def test_query_events_filters_and_pages(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> None:
    ids = seed(sessions, keys, clock)
    ref = subject_ref(keys.subject_ref, MYKADS[1])

    with sessions() as session:
        mine = query_events(session, subject_ref=ref)
        rejected = query_events(session, action="otp.check.rejected")
        recent = query_events(session, since=clock.now() - timedelta(seconds=3))
        page_one = query_events(session, limit=5)
        page_two = query_events(session, limit=5, after_id=page_one[-1].id)
        with pytest.raises(ValueError, match="limit"):
            query_events(session, limit=0)

    assert [event.id for event in mine] == [ids[1], ids[5], ids[9]]
    assert {event.mykad_masked for event in mine} == {"********6666"}
    assert [event.id for event in rejected] == ids[4:8]
    assert [event.id for event in recent] == ids[-4:]
    assert [event.id for event in page_one + page_two] == ids[:10]


def run_writers(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    *,
    chains: int,
    threads: int = 8,
    events_each: int = 25,
    subjects: list[str] = MYKADS,
    hold_seconds: float = 0,
) -> float:
    """Each thread records its events in their own transactions; returns the seconds taken."""
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            start.wait()
            for index in range(events_each):
                with sessions() as session, session.begin():
                    audit_log(session, keys, chains).record(
                        now=clock.now(),
                        action="signature.created",
                        actor=f"client:{number}",
                        mykad=subjects[(number + index) % len(subjects)],
                        target_id=f"request-{number}-{index}",
                        details={"index": index},
                    )
                    if hold_seconds:
                        session.execute(text("SELECT pg_sleep(:s)"), {"s": hold_seconds})
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    assert errors == []
    return elapsed


def test_concurrent_writers_keep_every_chain_contiguous(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> None:
    run_writers(sessions, keys, clock, chains=CHAINS)

    result = verify(sessions, keys)

    assert result.ok, result.first_broken
    assert result.checked == 200
    with sessions() as session:
        seqs: dict[int, list[int]] = defaultdict(list)
        for chain, seq in session.execute(
            select(AuditEvent.chain, AuditEvent.seq).order_by(AuditEvent.id)
        ):
            seqs[chain].append(seq)
    assert len(seqs) > 1
    for chain_seqs in seqs.values():
        assert chain_seqs == list(range(1, len(chain_seqs) + 1))


def test_verifying_during_writes_finds_no_false_break(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> None:
    people = [f"8501011{n:05d}" for n in range(64)]
    writers = threading.Thread(
        target=run_writers,
        args=(sessions, keys, clock),
        kwargs={"chains": CHAINS, "subjects": people},
    )
    writers.start()
    results = []
    # Bounded: on SQLite each check takes the write lock (BEGIN IMMEDIATE) and starves writers.
    while writers.is_alive() and len(results) < 30:
        results.append(verify(sessions, keys))
    writers.join()
    results.append(verify(sessions, keys))

    assert [result.first_broken for result in results if not result.ok] == []
    assert results[-1].checked == 200


def test_first_event_of_a_chain_created_concurrently(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    engine: Engine,
    is_postgres: bool,
) -> None:
    """The second writer finds no head, tries to create it, and must wait for the first."""
    first = sessions()
    audit_log(first, keys).record(now=clock.now(), action="a", actor="x", mykad=MYKADS[0])
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with sessions() as session, session.begin():
                audit_log(session, keys).record(
                    now=clock.now(), action="b", actor="y", mykad=MYKADS[0]
                )
        except BaseException as error:
            errors.append(error)

    worker = threading.Thread(target=second)
    worker.start()
    if is_postgres:
        wait_until(lambda: lock_waiters(engine) > 0)
    first.commit()
    first.close()
    worker.join()

    assert errors == []
    result = verify(sessions, keys)
    assert result.ok
    assert result.checked == 2


def lock_waiters(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")))


def wait_until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"


def test_measure_chains_under_concurrency(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    engine: Engine,
    is_postgres: bool,
) -> None:
    """Not an assertion on time: prints what one chain costs against sixteen.

    On PostgreSQL a second round keeps each transaction open 5 ms after its event (pg_sleep on
    the server, standing for the rest of a signing transaction and a durable commit, which
    this fsync-less test server does not pay): that is the time a head stays locked.
    """
    people = [f"8501011{n:05d}" for n in range(64)]
    holds = [0.0, 0.005] if is_postgres else [0.0]
    for hold in holds:
        timings: dict[int, list[float]] = {}
        for chains in (CHAINS, 1, CHAINS, 1):
            timings.setdefault(chains, []).append(
                run_writers(
                    sessions, keys, clock, chains=chains, subjects=people, hold_seconds=hold
                )
            )
            assert verify(sessions, keys).ok
            tamper(engine, "DELETE FROM audit_events")
            tamper(engine, "DELETE FROM audit_chain_heads")
        for chains, seconds in timings.items():
            print(
                f"\naudit {engine.dialect.name}, lock held +{hold * 1000:.0f} ms:"
                f" 8 threads x 25 events, {chains:2d} chain(s):"
                f" {', '.join(f'{s * 1000:.0f} ms' for s in seconds)}"
                f" ({200 / min(seconds):.0f} events/s at best)"
            )

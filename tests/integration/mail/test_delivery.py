"""The delivery worker against a real database and a real SMTP sink.

Time is a FrozenClock moved by hand; the only waits are bounded ones on the sink's thread.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.crypto.keys import Secrets
from app.models.outbox import OutboxMessage, OutboxStatus
from app.services.mail.claims import outbox_stats
from app.services.mail.delivery import DeliveryReport, DeliveryWorker
from app.services.mail.sink import MailSink
from app.services.mail.transport import SmtpTransport, Transport
from app.settings import Settings
from tests.integration.mail.helpers import (
    BODY,
    CODE,
    RECIPIENT,
    SUBJECT,
    Workers,
    enqueue,
    load,
    smtp_settings,
)


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port bound but not listening: every connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class ClockAdvancingTransport:
    """Sends for real, then moves the clock: time passing during an SMTP exchange."""

    def __init__(self, inner: Transport, clock: FrozenClock, seconds: float) -> None:
        self.inner, self.clock, self.seconds = inner, clock, seconds

    def send(self, message: bytes, from_addr: str, to_addrs: Sequence[str]) -> None:
        self.inner.send(message, from_addr, to_addrs)
        self.clock.advance(self.seconds)

    def close(self) -> None:
        self.inner.close()


def test_delivers_once_with_headers_and_wipes(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    sink: MailSink,
    worker: DeliveryWorker,
) -> None:
    request_id = str(uuid.uuid4())
    message_id = enqueue(sessions, keys, clock, request_id=request_id, not_after_seconds=120)

    report = worker.deliver_due()

    assert report == DeliveryReport(sent=1, claimed=1)
    [received] = sink.messages
    assert received["Subject"] == SUBJECT
    assert received["To"] == RECIPIENT
    assert received["From"] == "roamsign <no-reply@roamsign.local>"
    assert received["X-Roamsign-Request-Id"] == request_id
    assert received["Message-ID"] == f"<{message_id}@roamsign.local>"
    assert received["Date"].datetime == clock.now()
    assert received.get_content_type() == "text/plain"
    assert received.get_content_charset() == "utf-8"
    assert received.get_content() == BODY
    [eml] = sorted(sink.directory.glob("*.eml")) if sink.directory else []
    assert f"Kod OTP / OTP code: {CODE}".encode() in eml.read_bytes()

    row = load(sessions, message_id)
    assert row.status == OutboxStatus.SENT
    assert row.sent_at == clock.now()
    assert row.sealed_message is None
    assert row.attempts == 1
    assert row.lease_until is None

    clock.advance(3600)
    assert worker.deliver_due() == DeliveryReport()
    assert len(sink.messages) == 1


def test_transient_failure_backs_off_then_delivers_exactly_once(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    sink: MailSink,
    worker: DeliveryWorker,
) -> None:
    message_id = enqueue(sessions, keys, clock, not_after_seconds=120)
    sink.fail_next(1, code=451)

    assert worker.deliver_due() == DeliveryReport(retried=1, claimed=1)
    row = load(sessions, message_id)
    assert row.status == OutboxStatus.PENDING
    assert row.attempts == 1
    assert row.last_error is not None and "451" in row.last_error
    assert row.sealed_message is not None
    wait = (row.next_attempt_at - clock.now()).total_seconds()
    assert 2.0 <= wait <= 2.0 * 1.2
    assert sink.messages == []

    assert worker.deliver_due() == DeliveryReport()  # not due yet

    clock.advance(wait)
    assert worker.deliver_due() == DeliveryReport(sent=1, claimed=1)
    clock.advance(600)
    assert worker.deliver_due() == DeliveryReport()
    assert len(sink.messages) == 1
    row = load(sessions, message_id)
    assert (row.status, row.attempts, row.last_error) == (OutboxStatus.SENT, 2, None)


def test_permanent_failure_fails_and_wipes(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    sink: MailSink,
    worker: DeliveryWorker,
) -> None:
    message_id = enqueue(sessions, keys, clock)
    sink.fail_next(1, code=554)

    assert worker.deliver_due() == DeliveryReport(failed=1, claimed=1)
    row = load(sessions, message_id)
    assert row.status == OutboxStatus.FAILED
    assert row.sealed_message is None
    assert row.last_error is not None and "554" in row.last_error

    clock.advance(3600)
    assert worker.deliver_due() == DeliveryReport()
    assert sink.messages == []


def test_smtp_down_retries_and_the_request_side_is_unaffected(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    workers: Workers,
    dead_port: int,
) -> None:
    down = workers(smtp_settings(dead_port, delivery_max_attempts=2))
    # Queueing needs no SMTP server: the use case's transaction commits regardless.
    message_id = enqueue(sessions, keys, clock)

    assert down.deliver_due() == DeliveryReport(retried=1, claimed=1)
    row = load(sessions, message_id)
    assert row.status == OutboxStatus.PENDING
    assert row.last_error is not None and "cannot open SMTP session" in row.last_error
    assert CODE not in row.last_error

    clock.advance(10)
    assert down.deliver_due() == DeliveryReport(failed=1, claimed=1)
    row = load(sessions, message_id)
    assert (row.status, row.attempts, row.sealed_message) == (OutboxStatus.FAILED, 2, None)


def test_message_past_not_after_while_smtp_is_down_is_never_sent(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    sink: MailSink,
    workers: Workers,
    worker: DeliveryWorker,
    dead_port: int,
) -> None:
    down = workers(smtp_settings(dead_port))
    message_id = enqueue(sessions, keys, clock, not_after_seconds=120)
    assert down.deliver_due().retried == 1

    clock.advance(121)
    assert worker.deliver_due() == DeliveryReport(expired=1)  # SMTP is back; too late
    row = load(sessions, message_id)
    assert (row.status, row.sealed_message) == (OutboxStatus.EXPIRED, None)
    clock.advance(3600)
    assert worker.deliver_due() == DeliveryReport()
    assert sink.messages == []


def test_not_after_is_checked_again_right_before_sending(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    sink: MailSink,
    workers: Workers,
    settings: Settings,
) -> None:
    first = enqueue(sessions, keys, clock, not_after_seconds=60)
    clock.advance(1)
    second = enqueue(sessions, keys, clock, not_after_seconds=5)
    slow = workers(settings, ClockAdvancingTransport(SmtpTransport(settings), clock, 10))

    assert slow.deliver_due() == DeliveryReport(sent=1, expired=1, claimed=2)
    assert [m["Message-ID"] for m in sink.messages] == [f"<{first}@roamsign.local>"]
    row = load(sessions, second)
    assert (row.status, row.sealed_message) == (OutboxStatus.EXPIRED, None)


def test_the_delivery_poll_names_its_statuses_in_the_sql(
    engine: Engine,
    worker: DeliveryWorker,
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
) -> None:
    # With the status as a parameter, PostgreSQL may use a generic plan that scans every sent
    # message of the history on each poll (bench/scale.py saw 1.7 million rows read a poll).
    enqueue(sessions, keys, clock, not_after_seconds=60)
    statements: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", capture)
    try:
        assert worker.deliver_due().sent == 1
    finally:
        event.remove(engine, "before_cursor_execute", capture)

    polls = [s for s in statements if "outbox_messages.status" in s and "lease_until" in s]
    assert len(polls) == 2  # the expiry sweep and the claim
    for statement in polls:
        assert "outbox_messages.status = 'pending'" in statement
        assert "outbox_messages.status = 'sending'" in statement


def test_messages_with_a_deadline_go_before_notices(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    sink: MailSink,
    worker: DeliveryWorker,
) -> None:
    notices = [enqueue(sessions, keys, clock) for _ in range(3)]
    clock.advance(1)
    otp = enqueue(sessions, keys, clock, not_after_seconds=120)

    assert worker.deliver_due(limit=1) == DeliveryReport(sent=1, claimed=1)
    assert worker.deliver_due().sent == 3

    received = [m["Message-ID"] for m in sink.messages]
    assert received[0] == f"<{otp}@roamsign.local>"
    assert received[1:] == [f"<{notice}@roamsign.local>" for notice in notices]


def test_message_is_handed_back_when_the_lease_runs_low(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    sink: MailSink,
    workers: Workers,
    settings: Settings,
) -> None:
    enqueue(sessions, keys, clock)
    clock.advance(1)
    second = enqueue(sessions, keys, clock)
    # Lease 30 s, SMTP timeout 5 s: after a 25 s exchange, 5 s is too little to start another.
    slow = workers(
        settings, ClockAdvancingTransport(SmtpTransport(settings), clock, 25), lease_seconds=30
    )

    assert slow.deliver_due() == DeliveryReport(sent=1, released=1, claimed=2)
    row = load(sessions, second)
    assert (row.status, row.attempts, row.lease_until) == (OutboxStatus.PENDING, 0, None)
    assert slow.deliver_due() == DeliveryReport(sent=1, claimed=1)
    assert len(sink.messages) == 2


def test_stale_sending_message_is_reclaimed_after_its_lease(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    sink: MailSink,
    worker: DeliveryWorker,
) -> None:
    message_id = enqueue(sessions, keys, clock)
    with sessions.begin() as session:  # a worker claimed it, then died
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id)
            .values(
                status=OutboxStatus.SENDING,
                attempts=1,
                lease_until=clock.now() + timedelta(seconds=60),
            )
        )

    assert worker.deliver_due() == DeliveryReport()
    clock.advance(60)
    assert worker.deliver_due() == DeliveryReport(sent=1, claimed=1)
    assert load(sessions, message_id).attempts == 2
    assert len(sink.messages) == 1


def test_stale_message_after_its_last_attempt_fails(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    sink: MailSink,
    worker: DeliveryWorker,
) -> None:
    message_id = enqueue(sessions, keys, clock)
    with sessions.begin() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id)
            .values(status=OutboxStatus.SENDING, attempts=3, lease_until=clock.now())
        )

    assert worker.deliver_due() == DeliveryReport(failed=1)
    row = load(sessions, message_id)
    assert (row.status, row.sealed_message) == (OutboxStatus.FAILED, None)
    assert sink.messages == []


def test_tampered_row_is_not_sent(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    sink: MailSink,
    worker: DeliveryWorker,
) -> None:
    message_id = enqueue(sessions, keys, clock)
    with sessions.begin() as session:  # someone with database access redirects the OTP
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id)
            .values(recipient="mallory@example.com")
        )

    assert worker.deliver_due() == DeliveryReport(failed=1, claimed=1)
    assert load(sessions, message_id).sealed_message is None
    assert sink.messages == []


def test_reconnects_when_the_server_dropped_the_connection(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    tmp_path: Path,
    workers: Workers,
) -> None:
    with MailSink(tmp_path / "first") as first:
        worker = workers(smtp_settings(first.port, smtp_timeout_seconds=2.0))
        enqueue(sessions, keys, clock)
        enqueue(sessions, keys, clock)
        assert worker.deliver_due(limit=1).sent == 1  # the connection stays open
        port = first.port
    with MailSink(tmp_path / "second", port=port) as second:
        assert worker.deliver_due(limit=1) == DeliveryReport(sent=1, claimed=1)
        assert len(second.messages) == 1


def test_two_workers_deliver_each_message_exactly_once(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    sink: MailSink,
    workers: Workers,
    settings: Settings,
) -> None:
    ids = {enqueue(sessions, keys, clock) for _ in range(30)}
    pair = [workers(settings), workers(settings)]
    start = threading.Barrier(len(pair))
    reports: list[DeliveryReport] = []
    errors: list[BaseException] = []

    def run(worker: DeliveryWorker) -> None:
        try:
            start.wait(timeout=10)
            for _ in range(100):
                report = worker.deliver_due(limit=4)
                reports.append(report)
                with sessions() as session:
                    if outbox_stats(session, clock.now())[0] == 0:
                        return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(worker,)) for worker in pair]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sum(report.sent for report in reports) == 30
    received = [message["Message-ID"] for message in sink.messages]
    assert sorted(received) == sorted(f"<{message_id}@roamsign.local>" for message_id in ids)
    with sessions() as session:
        statuses = session.scalars(select(OutboxMessage.status)).all()
        attempts = session.scalars(select(OutboxMessage.attempts)).all()
    assert set(statuses) == {OutboxStatus.SENT}
    assert set(attempts) == {1}


@pytest.mark.postgres_only
def test_claim_skips_rows_another_worker_holds(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    sink: MailSink,
    worker: DeliveryWorker,
) -> None:
    held = enqueue(sessions, keys, clock)
    free = enqueue(sessions, keys, clock)
    with sessions.begin() as other:  # another worker, mid-claim
        other.execute(
            select(OutboxMessage.id).where(OutboxMessage.id == held).with_for_update()
        ).all()
        assert worker.deliver_due() == DeliveryReport(sent=1, claimed=1)
    assert [m["Message-ID"] for m in sink.messages] == [f"<{free}@roamsign.local>"]
    assert load(sessions, held).status == OutboxStatus.PENDING


def test_outbox_stats(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    worker: DeliveryWorker,
) -> None:
    with sessions() as session:
        assert outbox_stats(session, clock.now()) == (0, 0.0)
    enqueue(sessions, keys, clock)
    clock.advance(10)
    enqueue(sessions, keys, clock)
    clock.advance(20)
    with sessions() as session:
        assert outbox_stats(session, clock.now()) == (2, 30.0)
    worker.deliver_due()
    with sessions() as session:
        assert outbox_stats(session, clock.now()) == (0, 0.0)


def test_backoff_grows_and_is_capped(worker: DeliveryWorker) -> None:
    waits = [worker.backoff_seconds(attempts) for attempts in range(1, 12)]
    for attempts, wait in enumerate(waits, start=1):
        base = min(2.0 * 2 ** (attempts - 1), 300.0)
        assert base <= wait <= min(base * 1.2, 300.0)
    assert waits[-1] == 300.0

"""The outbox and its delivery worker against a real database and a real SMTP sink.

Time is a FrozenClock moved by hand; the only waits are bounded ones on the sink's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.crypto.keys import DerivedKeys
from app.crypto.sealing import SealBroken, open_sealed
from app.db import make_sessionmaker, unit_of_work
from app.models import AuditEvent
from app.models.outbox import OutboxMessage, OutboxStatus
from app.services.audit.log import AuditLog
from app.services.audit.verification import verify_audit_trail
from app.services.mail.claims import outbox_stats
from app.services.mail.courier import COURIER_KEY, Claim, Courier, Nudge
from app.services.mail.delivery import DeliveryReport, DeliveryWorker
from app.services.mail.loop import run_delivery_loop
from app.services.mail.outbox import Outbox, associated_data, open_message
from app.services.mail.sink import MailSink
from app.services.mail.transport import PermanentDeliveryError, SmtpTransport, Transport
from app.settings import Settings

RECIPIENT = "aminah.yusof@jdn.gov.my"
SUBJECT = "Kod OTP tandatangan digital / Digital signature OTP"
CODE = "493817"
BODY = (
    f"Kod OTP / OTP code: {CODE}\n"
    "\n"
    "Dokumen: Baucar Bayaran PV-2026-000123 — Pejabat Perakaunan Negeri\n"
    "Sila sahkan sebelum 10:02 (waktu Malaysia). Jangan kongsi kod ini.\n"
    "\n"
    "Document: Baucar Bayaran PV-2026-000123 — State Accountant's Office\n"
    "Please approve before 10:02 “Café Rakyat” ✓. Never share this code.\n"
)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[MailSink]:
    with MailSink(tmp_path / "mail") as sink:
        yield sink


def smtp_settings(port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_timeout_seconds": 5.0,
        "delivery_backoff_base_seconds": 2.0,
        "delivery_max_attempts": 3,
        "mail_from": "roamsign <no-reply@roamsign.local>",
    }
    return Settings(**(values | overrides))


@pytest.fixture
def settings(sink: MailSink) -> Settings:
    return smtp_settings(sink.port)


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port bound but not listening: every connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class Workers:
    """Builds delivery workers and closes their SMTP connections after the test."""

    def __init__(
        self, sessions: sessionmaker[Session], keys: DerivedKeys, clock: FrozenClock
    ) -> None:
        self.sessions, self.keys, self.clock = sessions, keys, clock
        self.built: list[DeliveryWorker] = []

    def __call__(
        self, settings: Settings, transport: Transport | None = None, **kwargs: Any
    ) -> DeliveryWorker:
        worker = DeliveryWorker(
            self.sessions,
            self.keys.outbox_seal,
            transport or SmtpTransport(settings),
            self.clock,
            settings,
            **kwargs,
        )
        self.built.append(worker)
        return worker


@pytest.fixture
def workers(
    sessions: sessionmaker[Session], keys: DerivedKeys, clock: FrozenClock
) -> Iterator[Workers]:
    factory = Workers(sessions, keys, clock)
    yield factory
    for worker in factory.built:
        worker.close()


@pytest.fixture
def worker(workers: Workers, settings: Settings) -> DeliveryWorker:
    return workers(settings)


def enqueue(
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
    *,
    request_id: str | None = None,
    not_after_seconds: float | None = None,
    body: str = BODY,
) -> str:
    """Queue one message in its own committed transaction, as a use case would."""
    now = clock.now()
    with sessions.begin() as session:
        message = Outbox(session, keys.outbox_seal).enqueue(
            purpose="otp",
            recipient=RECIPIENT,
            subject=SUBJECT,
            body=body,
            now=now,
            request_id=request_id or str(uuid.uuid4()),
            not_after=None
            if not_after_seconds is None
            else now + timedelta(seconds=not_after_seconds),
        )
        return message.id


def bound_courier(**kwargs: Any) -> Courier:
    """A courier bound to the running event loop, as the server's lifespan binds its own."""
    courier = Courier(**kwargs)
    courier.bind(asyncio.get_running_loop())
    return courier


def load(sessions: sessionmaker[Session], message_id: str) -> OutboxMessage:
    with sessions() as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        return row


class ClockAdvancingTransport:
    """Sends for real, then moves the clock: time passing during an SMTP exchange."""

    def __init__(self, inner: Transport, clock: FrozenClock, seconds: float) -> None:
        self.inner, self.clock, self.seconds = inner, clock, seconds

    def send(self, message: bytes, from_addr: str, to_addrs: Sequence[str]) -> None:
        self.inner.send(message, from_addr, to_addrs)
        self.clock.advance(self.seconds)

    def close(self) -> None:
        self.inner.close()


# -- enqueue -------------------------------------------------------------------------------------


def test_enqueue_stores_only_ciphertext_bound_to_the_row(
    session: Session, keys: DerivedKeys, clock: FrozenClock
) -> None:
    request_id = str(uuid.uuid4())
    message = Outbox(session, keys.outbox_seal).enqueue(
        purpose="otp",
        recipient=RECIPIENT,
        subject=SUBJECT,
        body=BODY,
        now=clock.now(),
        request_id=request_id,
        not_after=clock.now() + timedelta(seconds=120),
        headers={"X-Roamsign-Request-Id": request_id},
    )
    session.commit()
    session.expire_all()

    stored = session.get(OutboxMessage, message.id)
    assert stored is not None
    assert stored.status == OutboxStatus.PENDING
    assert stored.next_attempt_at == clock.now()
    sealed = stored.sealed_message
    assert sealed is not None
    assert CODE.encode() not in sealed
    assert b"Kod OTP" not in sealed
    assert b"Baucar" not in sealed

    plain = open_message(keys.outbox_seal, stored)
    assert f"Kod OTP / OTP code: {CODE}".encode() in plain
    assert plain.count(b"X-Roamsign-Request-Id:") == 1
    assert b"\nFrom:" not in plain  # added by the worker from the settings
    for wrong in (
        associated_data(str(uuid.uuid4()), request_id, RECIPIENT),
        associated_data(message.id, str(uuid.uuid4()), RECIPIENT),
        associated_data(message.id, None, RECIPIENT),
        associated_data(message.id, request_id, "mallory@example.com"),
    ):
        with pytest.raises(SealBroken):
            open_sealed(keys.outbox_seal, sealed, wrong)
    with pytest.raises(SealBroken):
        open_sealed(DerivedKeys.from_master(b"\x01" * 32).outbox_seal, sealed,
                    associated_data(message.id, request_id, RECIPIENT))  # fmt: skip


def test_enqueue_is_part_of_the_callers_transaction(
    sessions: sessionmaker[Session], keys: DerivedKeys, clock: FrozenClock
) -> None:
    with sessions() as session:
        Outbox(session, keys.outbox_seal).enqueue(
            purpose="otp", recipient=RECIPIENT, subject=SUBJECT, body=BODY, now=clock.now()
        )
        session.rollback()
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


@pytest.mark.parametrize(
    "headers",
    [{"Subject": "other"}, {"from": "x@example.com"}, {"X-Roamsign-Request-Id": "another"}],
)
def test_enqueue_refuses_headers_it_owns(
    session: Session, keys: DerivedKeys, clock: FrozenClock, headers: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        Outbox(session, keys.outbox_seal).enqueue(
            purpose="otp",
            recipient=RECIPIENT,
            subject=SUBJECT,
            body=BODY,
            now=clock.now(),
            request_id=str(uuid.uuid4()),
            headers=headers,
        )


@pytest.mark.parametrize(
    ("subject", "headers"),
    [("OTP\r\nBcc: x@example.com", None), ("OTP", {"X-Note": "a\nBcc: x@example.com"})],
)
def test_enqueue_refuses_line_breaks_in_headers(
    session: Session,
    keys: DerivedKeys,
    clock: FrozenClock,
    subject: str,
    headers: dict[str, str] | None,
) -> None:
    with pytest.raises(ValueError, match="line breaks"):
        Outbox(session, keys.outbox_seal).enqueue(
            purpose="notice",
            recipient=RECIPIENT,
            subject=subject,
            body=BODY,
            now=clock.now(),
            headers=headers,
        )


def test_non_ascii_subject_and_long_lines_round_trip(
    session: Session, keys: DerivedKeys, clock: FrozenClock
) -> None:
    subject = "Notis tandatangan: Baucar bayaran — Pérolehan " + "x" * 80
    body = "Dokumen «Tender 2026/11» ditandatangani.\n" + "y" * 200 + "\nKod: 123456\n"
    row = Outbox(session, keys.outbox_seal).enqueue(
        purpose="notice", recipient=RECIPIENT, subject=subject, body=body, now=clock.now()
    )

    raw = open_message(keys.outbox_seal, row)
    parsed = BytesParser(policy=default).parsebytes(raw)

    assert parsed["Subject"] == subject
    assert parsed.get_content().replace("\r\n", "\n") == body  # as an SMTP server sees it
    assert parsed["Date"].datetime == clock.now()
    assert raw.isascii()  # 7-bit clean: quoted-printable body, RFC 2047 subject
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    assert b"Kod: 123456" in raw  # the code line stays readable in the raw message


# -- delivery ------------------------------------------------------------------------------------


def test_delivers_once_with_headers_and_wipes(
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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
    keys: DerivedKeys,
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


# -- the loop ------------------------------------------------------------------------------------


class ObservedWorker(DeliveryWorker):
    """Signals each finished pass; optionally fails its first one."""

    def __init__(self, *args: Any, fail_first: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passed = threading.Event()
        self._fail_first_pass = fail_first

    def deliver_due(
        self, limit: int = 100, handed: Sequence[Claim] = (), *, claim_database: bool = True
    ) -> DeliveryReport:
        if self._fail_first_pass:
            self._fail_first_pass = False
            raise RuntimeError("database unavailable")
        try:
            return super().deliver_due(limit, handed, claim_database=claim_database)
        finally:
            self.passed.set()


def observed_worker(
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
    settings: Settings,
    **kwargs: Any,
) -> ObservedWorker:
    return ObservedWorker(
        sessions, keys.outbox_seal, SmtpTransport(settings), clock, settings, **kwargs
    )


async def test_loop_delivers_at_once_when_woken(
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
    sink: MailSink,
    settings: Settings,
) -> None:
    worker = observed_worker(sessions, keys, clock, settings)
    stop, courier = asyncio.Event(), bound_courier()
    # An hour's poll: only the nudge can explain a prompt delivery.
    task = asyncio.create_task(run_delivery_loop(worker, 3600, courier, stop))
    try:
        assert await asyncio.to_thread(worker.passed.wait, 5)
        message_id = enqueue(sessions, keys, clock)  # pending: these sessions have no courier
        courier.nudge()
        received = await asyncio.to_thread(sink.wait_for, None, 5)
        assert received["Message-ID"] == f"<{message_id}@roamsign.local>"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def test_a_nudge_wakes_one_waiting_loop_and_is_kept_when_none_waits() -> None:
    nudge = Nudge()
    waiters = [asyncio.create_task(nudge.wait()) for _ in range(3)]
    await asyncio.sleep(0)  # let them all wait

    nudge.set()
    await asyncio.sleep(0)
    assert sum(waiter.done() for waiter in waiters) == 1
    nudge.set()
    nudge.set()
    await asyncio.sleep(0)
    assert all(waiter.done() for waiter in waiters)

    nudge.set()  # nobody waits: kept for the next look
    assert nudge.is_set()
    await asyncio.wait_for(nudge.wait(), timeout=1)  # returns at once, and takes it
    assert not nudge.is_set()
    nudge.set()
    nudge.clear()  # a pass is starting: it will see what the nudge was about
    assert not nudge.is_set()


async def test_loops_sharing_a_wakeup_deliver_each_message_once(
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
    sink: MailSink,
    workers: Workers,
    settings: Settings,
) -> None:
    # What the server runs: ROAMSIGN_DELIVERY_CONCURRENCY loops, one SMTP connection each.
    stop, courier = asyncio.Event(), bound_courier()
    tasks = [
        asyncio.create_task(run_delivery_loop(workers(settings), 3600, courier, stop, limit=2))
        for _ in range(3)
    ]
    try:
        queued = {enqueue(sessions, keys, clock, not_after_seconds=120) for _ in range(12)}
        courier.nudge()
        await asyncio.to_thread(sink.wait_for, lambda _: len(sink.messages) >= 12, 10)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    # Every loop has ended its last pass, and the sink acknowledged each message it got: a
    # duplicate, had one been sent, is in the list now.
    received = [m["Message-ID"] for m in sink.messages]
    assert sorted(received) == sorted(f"<{message_id}@roamsign.local>" for message_id in queued)


async def test_loop_survives_a_failing_pass(
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
    sink: MailSink,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    enqueue(sessions, keys, clock)
    worker = observed_worker(sessions, keys, clock, settings, fail_first=True)
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="roamsign.delivery"):
        task = asyncio.create_task(run_delivery_loop(worker, 0.01, bound_courier(), stop))
        try:
            message: EmailMessage = await asyncio.to_thread(sink.wait_for, None, 5)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=5)
    assert message.get_content() == BODY
    ours = [r for r in caplog.records if r.name == "roamsign.delivery"]  # not aiosmtpd's
    assert [r.getMessage() for r in ours] == ["outbox.delivery.error"]
    assert all(BODY not in r.getMessage() and CODE not in str(r.__dict__) for r in ours)


# -- the courier: messages queued where loops run are handed over, not claimed --------------


def courier_sessions(engine: Engine, courier: Courier) -> sessionmaker[Session]:
    """Sessions that carry `courier`, as the runtime's do (app.runtime.Runtime.build)."""
    return make_sessionmaker(engine, info={COURIER_KEY: courier})


@contextlib.contextmanager
def capture_statements(engine: Engine, into: list[str]) -> Iterator[None]:
    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        into.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", record)


def queue_in_unit(
    sessions: sessionmaker[Session], keys: DerivedKeys, clock: FrozenClock, **kwargs: Any
) -> str:
    """Queue one message in a unit of work, as an endpoint does (after-commit hooks run)."""
    with unit_of_work(sessions) as session:
        return queue_in(session, keys, clock, **kwargs)


def queue_in(session: Session, keys: DerivedKeys, clock: FrozenClock, **kwargs: Any) -> str:
    return (
        Outbox(session, keys.outbox_seal)
        .enqueue(
            purpose="otp",
            recipient=RECIPIENT,
            subject=SUBJECT,
            body=BODY,
            now=clock.now(),
            request_id=str(uuid.uuid4()),
            **kwargs,
        )
        .id
    )


async def test_a_message_queued_where_loops_run_is_sent_without_a_claim(
    engine: Engine,
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
    sink: MailSink,
    settings: Settings,
) -> None:
    courier = bound_courier()
    carried = courier_sessions(engine, courier)
    worker = ObservedWorker(carried, keys.outbox_seal, SmtpTransport(settings), clock, settings)
    stop = asyncio.Event()
    # An hour's poll: the loop's first pass looks at the (empty) database, then only a nudge
    # or a hand-over can make it send.
    task = asyncio.create_task(run_delivery_loop(worker, 3600, courier, stop))
    statements: list[str] = []
    try:
        assert await asyncio.to_thread(worker.passed.wait, 5)
        worker.passed.clear()
        with capture_statements(engine, statements):
            message_id = await asyncio.to_thread(queue_in_unit, carried, keys, clock)
            received = await asyncio.to_thread(sink.wait_for, None, 5)
            assert await asyncio.to_thread(worker.passed.wait, 5)  # its pass has committed
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    assert received["Message-ID"] == f"<{message_id}@roamsign.local>"
    row = load(sessions, message_id)
    assert (row.status, row.attempts, row.sealed_message) == (OutboxStatus.SENT, 1, None)
    # The insert leased it; then the only statement on the outbox is the one that marks it
    # sent. No claim (SELECT ... FOR UPDATE SKIP LOCKED, then UPDATE ... attempts + 1) ran.
    outbox = [sql for sql in statements if "outbox_messages" in sql]
    assert [sql.split()[0] for sql in outbox] == ["INSERT", "UPDATE"], outbox


async def test_the_lease_is_taken_by_the_transaction_that_queues(
    engine: Engine,
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
    workers: Workers,
    sink: MailSink,
    settings: Settings,
) -> None:
    courier = bound_courier()
    carried = courier_sessions(engine, courier)
    handed_id = queue_in_unit(carried, keys, clock)
    handed = load(sessions, handed_id)
    assert (handed.status, handed.attempts) == (OutboxStatus.SENDING, 1)
    assert handed.lease_until == clock.now() + courier.lease
    # A rolled-back unit of work hands nothing over.
    with pytest.raises(RuntimeError), unit_of_work(carried) as session:
        queue_in(session, keys, clock)
        raise RuntimeError("the use case fails after queueing")
    await asyncio.sleep(0)  # let the hand-over's callback run
    assert [claim.id for claim in courier.take(10)] == [handed_id]
    # Nobody sends it (this process "died" with the claim): no one else may before the lease
    # runs out, and then any loop claims it from the database, as after a dead worker.
    worker = workers(settings)
    assert worker.deliver_due() == DeliveryReport()
    clock.advance(courier.lease.total_seconds())
    assert worker.deliver_due() == DeliveryReport(sent=1, claimed=1)
    assert load(sessions, handed_id).attempts == 2
    assert len(sink.messages) == 1


async def test_what_the_courier_cannot_carry_stays_pending(
    engine: Engine,
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
) -> None:
    unbound = Courier()
    first = queue_in_unit(courier_sessions(engine, unbound), keys, clock)
    courier = bound_courier(capacity=1)
    carried = courier_sessions(engine, courier)
    second = queue_in_unit(carried, keys, clock)
    await asyncio.sleep(0)
    third = queue_in_unit(carried, keys, clock)  # the one carried claim fills it
    # In a savepoint: it may yet be rolled back, but a claim handed over would be sent.
    courier.take(1)
    with unit_of_work(carried) as session, session.begin_nested():
        fourth = queue_in(session, keys, clock)
    await asyncio.sleep(0)
    statuses = [load(sessions, i).status for i in (first, second, third, fourth)]
    assert statuses == [
        OutboxStatus.PENDING,
        OutboxStatus.SENDING,
        OutboxStatus.PENDING,
        OutboxStatus.PENDING,
    ]
    # The pending ones nudged the loops to look at the database.
    assert courier.database_due() and not courier.carrying()


async def test_handed_claims_keep_the_deadline_and_go_back_when_the_loops_stop(
    engine: Engine,
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
    workers: Workers,
    sink: MailSink,
    settings: Settings,
) -> None:
    courier = bound_courier()
    carried = courier_sessions(engine, courier)
    late = queue_in_unit(carried, keys, clock, not_after=clock.now() + timedelta(seconds=120))
    await asyncio.sleep(0)
    worker = workers(settings)
    clock.advance(120)
    # Past its deadline before a loop took it: never sent, wiped.
    report = worker.deliver_due(handed=courier.take(4), claim_database=False)
    assert report == DeliveryReport(expired=1, handed=1)
    assert (load(sessions, late).status, load(sessions, late).sealed_message) == (
        OutboxStatus.EXPIRED,
        None,
    )
    left = queue_in_unit(carried, keys, clock)
    await asyncio.sleep(0)
    # The loops stop with a claim not taken: it is handed back, its attempt not counted.
    worker.release(courier.unbind())
    row = load(sessions, left)
    assert (row.status, row.attempts, row.lease_until) == (OutboxStatus.PENDING, 0, None)
    assert courier.lease_until(clock.now()) is None  # unbound: nothing more is leased
    assert worker.deliver_due() == DeliveryReport(sent=1, claimed=1)
    assert [m["Message-ID"] for m in sink.messages] == [f"<{left}@roamsign.local>"]


async def test_the_courier_carries_messages_with_a_deadline_first(
    engine: Engine, keys: DerivedKeys, clock: FrozenClock
) -> None:
    courier = bound_courier()
    carried = courier_sessions(engine, courier)
    notice = queue_in_unit(carried, keys, clock)
    otp = queue_in_unit(carried, keys, clock, not_after=clock.now() + timedelta(seconds=120))
    later_notice = queue_in_unit(carried, keys, clock)
    await asyncio.sleep(0)
    assert [claim.id for claim in courier.take(2)] == [otp, notice]
    assert [claim.id for claim in courier.take(2)] == [later_notice]
    assert not courier.carrying()


async def test_the_pending_messages_of_one_unit_of_work_wake_one_loop(
    engine: Engine, keys: DerivedKeys, clock: FrozenClock
) -> None:
    courier = bound_courier(capacity=0)  # full: everything stays pending
    carried = courier_sessions(engine, courier)
    loops = [asyncio.create_task(courier.wakeup.wait()) for _ in range(3)]
    await asyncio.sleep(0)  # all three wait
    with unit_of_work(carried) as session:
        queue_in(session, keys, clock)
        queue_in(session, keys, clock)
    for _ in range(3):
        await asyncio.sleep(0)  # the nudges' callbacks, then the woken waiter
    assert sum(loop.done() for loop in loops) == 1
    assert courier.database_due() and not courier.database_due()
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)


# -- the sent marks of a pass ----------------------------------------------------------------------


def auditing(keys: DerivedKeys) -> Callable[[Session], AuditLog]:
    return lambda session: AuditLog(session, keys.audit_mac, keys.subject_ref)


def delivery_events(
    sessions: sessionmaker[Session], keys: DerivedKeys
) -> list[tuple[str, str | None]]:
    """The audit trail's (action, target) in order, once it verifies."""
    with sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        assert verify_audit_trail(session, keys.audit_mac).ok
        return [(event.action, event.target_id) for event in events]


@contextlib.contextmanager
def count_commits(engine: Engine, into: list[int]) -> Iterator[None]:
    def record(_conn: Any) -> None:
        into.append(1)

    event.listen(engine, "commit", record)
    try:
        yield
    finally:
        event.remove(engine, "commit", record)


async def handed_claims(
    engine: Engine, keys: DerivedKeys, clock: FrozenClock, count: int, *, gap: float = 0
) -> list[Claim]:
    """`count` messages queued where a courier runs (each `gap` seconds after the last), and
    the claims it was handed, in order."""
    courier = bound_courier()
    carried = courier_sessions(engine, courier)
    for index in range(count):
        if index:
            clock.advance(gap)
        queue_in_unit(carried, keys, clock)
    await asyncio.sleep(0)  # the hand-overs' callbacks
    claims = courier.take(count)
    assert len(claims) == count
    return claims


async def test_the_messages_of_one_pass_are_marked_sent_in_one_transaction(
    engine: Engine,
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
    workers: Workers,
    sink: MailSink,
    settings: Settings,
) -> None:
    claims = await handed_claims(engine, keys, clock, 3)
    worker = workers(settings, audit=auditing(keys))
    commits: list[int] = []
    with count_commits(engine, commits):
        report = worker.deliver_due(10, claims, claim_database=False)

    assert report == DeliveryReport(sent=3, handed=3)
    assert len(sink.messages) == 3
    # One transaction for the three marks and their events, not one per message.
    assert len(commits) == 1
    for claim in claims:
        row = load(sessions, claim.id)
        assert (row.status, row.sent_at, row.sealed_message) == (
            OutboxStatus.SENT,
            clock.now(),
            None,
        )
    assert delivery_events(sessions, keys) == [
        ("mail.delivered", claim.request_id) for claim in claims
    ]


class SecondRefused:
    """Sends for real, but the server refuses the second message for good."""

    def __init__(self, inner: Transport) -> None:
        self.inner, self.sends = inner, 0

    def send(self, message: bytes, from_addr: str, to_addrs: Sequence[str]) -> None:
        self.sends += 1
        if self.sends == 2:
            raise PermanentDeliveryError("SMTP 554 refused")
        self.inner.send(message, from_addr, to_addrs)

    def close(self) -> None:
        self.inner.close()


async def test_a_sent_message_is_recorded_before_the_next_outcome(
    engine: Engine,
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
    workers: Workers,
    sink: MailSink,
    settings: Settings,
) -> None:
    first, second = await handed_claims(engine, keys, clock, 2)
    worker = workers(settings, SecondRefused(SmtpTransport(settings)), audit=auditing(keys))

    report = worker.deliver_due(10, [first, second], claim_database=False)

    assert report == DeliveryReport(sent=1, failed=1, handed=2)
    assert load(sessions, first.id).status == OutboxStatus.SENT
    assert load(sessions, second.id).status == OutboxStatus.FAILED
    # In the order things happened: the first mark is committed before the refusal is.
    assert delivery_events(sessions, keys) == [
        ("mail.delivered", first.request_id),
        ("mail.failed", second.request_id),
    ]


class WatchingTransport:
    """Sends for real, notes the status of `watched` at each send, then moves the clock."""

    def __init__(
        self,
        inner: Transport,
        clock: FrozenClock,
        seconds: float,
        sessions: sessionmaker[Session],
    ) -> None:
        self.inner, self.clock, self.seconds, self.sessions = inner, clock, seconds, sessions
        self.watched = ""
        self.seen: list[str] = []

    def send(self, message: bytes, from_addr: str, to_addrs: Sequence[str]) -> None:
        self.seen.append(load(self.sessions, self.watched).status)
        self.inner.send(message, from_addr, to_addrs)
        self.clock.advance(self.seconds)

    def close(self) -> None:
        self.inner.close()


async def test_a_sent_mark_is_committed_before_its_lease_runs_low(
    engine: Engine,
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
    workers: Workers,
    sink: MailSink,
    settings: Settings,
) -> None:
    # Leases of 60 s taken 15 s apart; each exchange takes 40 s; the SMTP timeout is 5 s, so a
    # send needs 10 s of lease. After the first send (t=55) the second may still go (its lease
    # ends at 75), but the first's ends at 60: its mark must be committed before that send.
    first, second = await handed_claims(engine, keys, clock, 2, gap=15)
    transport = WatchingTransport(SmtpTransport(settings), clock, 40, sessions)
    transport.watched = first.id
    worker = workers(settings, transport)

    report = worker.deliver_due(10, [first, second], claim_database=False)

    assert report == DeliveryReport(sent=2, handed=2)
    assert transport.seen == [OutboxStatus.SENDING, OutboxStatus.SENT]
    assert load(sessions, second.id).status == OutboxStatus.SENT
    assert len(sink.messages) == 2


class FailingAudit:
    """An audit log whose first `failures` events fail, as if the database went away."""

    def __init__(self, keys: DerivedKeys, failures: int = 1) -> None:
        self.keys, self.failures = keys, failures

    def __call__(self, session: Session) -> AuditLog:
        if self.failures:
            self.failures -= 1
            raise OperationalError("INSERT INTO audit_events", {}, Exception("connection lost"))
        return AuditLog(session, self.keys.audit_mac, self.keys.subject_ref)


async def test_marks_a_failed_pass_could_not_commit_are_committed_by_the_release(
    engine: Engine,
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
    workers: Workers,
    sink: MailSink,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    claims = await handed_claims(engine, keys, clock, 2)
    worker = workers(settings, audit=FailingAudit(keys))

    with pytest.raises(OperationalError):
        worker.deliver_due(10, claims, claim_database=False)
    assert [load(sessions, claim.id).status for claim in claims] == [OutboxStatus.SENDING] * 2
    # What the loop does after a failing pass: release what it was handed. Both were sent, so
    # neither goes back to pending (to be sent again); their marks are committed instead.
    with caplog.at_level(logging.WARNING, logger="roamsign.delivery"):
        worker.release(claims)

    assert [load(sessions, claim.id).status for claim in claims] == [OutboxStatus.SENT] * 2
    assert delivery_events(sessions, keys) == [
        ("mail.delivered", claim.request_id) for claim in claims
    ]
    assert "outbox.delivery.lease_lost" not in caplog.text
    assert len(sink.messages) == 2


async def test_closing_with_marks_it_cannot_commit_still_closes(
    engine: Engine,
    sessions: sessionmaker[Session],
    keys: DerivedKeys,
    clock: FrozenClock,
    workers: Workers,
    sink: MailSink,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    [claim] = await handed_claims(engine, keys, clock, 1)
    worker = workers(settings, audit=FailingAudit(keys, failures=2))
    with pytest.raises(OperationalError):
        worker.deliver_due(10, [claim], claim_database=False)

    with caplog.at_level(logging.ERROR, logger="roamsign.delivery"):
        worker.close()  # the second try fails too: logged, not raised

    assert "outbox.delivery.unrecorded" in caplog.text
    # Still leased: sent again once the lease runs out (the at-least-once window).
    assert load(sessions, claim.id).status == OutboxStatus.SENDING
    assert len(sink.messages) == 1

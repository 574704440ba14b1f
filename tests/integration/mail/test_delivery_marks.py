"""The sent marks of a delivery pass: committed together, in order, and before a lease runs low."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.crypto.keys import Secrets
from app.models import AuditEvent
from app.models.outbox import OutboxStatus
from app.services.audit.log import AuditLog
from app.services.audit.verification import verify_audit_trail
from app.services.mail.courier import Claim
from app.services.mail.delivery import DeliveryReport
from app.services.mail.sink import MailSink
from app.services.mail.transport import PermanentDeliveryError, SmtpTransport, Transport
from app.settings import Settings
from tests.integration.mail.helpers import (
    Workers,
    bound_courier,
    courier_sessions,
    load,
    queue_in_unit,
)


def auditing(keys: Secrets) -> Callable[[Session], AuditLog]:
    return lambda session: AuditLog(session, keys.audit_mac, keys.subject_ref)


def delivery_events(sessions: sessionmaker[Session], keys: Secrets) -> list[tuple[str, str | None]]:
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
    engine: Engine, keys: Secrets, clock: FrozenClock, count: int, *, gap: float = 0
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
    keys: Secrets,
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
    keys: Secrets,
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
    keys: Secrets,
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

    def __init__(self, keys: Secrets, failures: int = 1) -> None:
        self.keys, self.failures = keys, failures

    def __call__(self, session: Session) -> AuditLog:
        if self.failures:
            self.failures -= 1
            raise OperationalError("INSERT INTO audit_events", {}, Exception("connection lost"))
        return AuditLog(session, self.keys.audit_mac, self.keys.subject_ref)


async def test_marks_a_failed_pass_could_not_commit_are_committed_by_the_release(
    engine: Engine,
    sessions: sessionmaker[Session],
    keys: Secrets,
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
    keys: Secrets,
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

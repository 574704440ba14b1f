"""The courier: messages queued where delivery loops run are handed over, not claimed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.crypto.keys import Secrets
from app.db import unit_of_work
from app.models.outbox import OutboxStatus
from app.services.mail.courier import Courier
from app.services.mail.delivery import DeliveryReport
from app.services.mail.loop import run_delivery_loop
from app.services.mail.sink import MailSink
from app.services.mail.transport import SmtpTransport
from app.settings import Settings
from tests.integration.mail.helpers import (
    ObservedWorker,
    Workers,
    bound_courier,
    courier_sessions,
    load,
    queue_in,
    queue_in_unit,
)


@contextlib.contextmanager
def capture_statements(engine: Engine, into: list[str]) -> Iterator[None]:
    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        into.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_a_message_queued_where_loops_run_is_sent_without_a_claim(
    engine: Engine,
    sessions: sessionmaker[Session],
    keys: Secrets,
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
    keys: Secrets,
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
    keys: Secrets,
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
    keys: Secrets,
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
    engine: Engine, keys: Secrets, clock: FrozenClock
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
    engine: Engine, keys: Secrets, clock: FrozenClock
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

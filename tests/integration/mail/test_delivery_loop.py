"""The delivery loop: woken by a nudge, sharing the wake-up, surviving a failing pass."""

from __future__ import annotations

import asyncio
import logging
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.crypto.keys import Secrets
from app.services.mail.courier import Nudge
from app.services.mail.loop import run_delivery_loop
from app.services.mail.sink import MailSink
from app.services.mail.transport import SmtpTransport
from app.settings import Settings
from tests.integration.mail.helpers import (
    BODY,
    CODE,
    ObservedWorker,
    Workers,
    bound_courier,
    enqueue,
)


def observed_worker(
    sessions: sessionmaker[Session],
    keys: Secrets,
    clock: FrozenClock,
    settings: Settings,
    **kwargs: Any,
) -> ObservedWorker:
    return ObservedWorker(
        sessions, keys.outbox_seal, SmtpTransport(settings), clock, settings, **kwargs
    )


async def test_loop_delivers_at_once_when_woken(
    sessions: sessionmaker[Session],
    keys: Secrets,
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
    keys: Secrets,
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
    keys: Secrets,
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

"""The delivery loop: runs the worker's passes in a thread of its own for the application.

Between passes it waits for the courier's wakeup, `stop` or the poll, so a message queued in
this process goes out at once and one queued elsewhere within a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from app.services.mail.courier import Courier, Nudge
from app.services.mail.delivery import DeliveryWorker

logger = logging.getLogger("roamsign.delivery")

# Messages claimed by one pass of one loop: small, so that several loops (one SMTP connection
# each) share a burst instead of one of them taking it all and sending it in sequence.
CLAIM_BATCH = 4


async def run_delivery_loop(
    worker: DeliveryWorker,
    poll_seconds: float,
    courier: Courier,
    stop: asyncio.Event,
    *,
    limit: int = CLAIM_BATCH,
) -> None:
    """Deliver until `stop` is set; between passes, wait for the courier's wakeup, `stop` or
    the poll. The courier must be bound to this event loop (`Courier.bind`).

    Each pass sends what the courier carries; it claims from the database only on the first
    pass, on a poll, when a nudge asks for it, or after a full database batch. A full batch, or
    more carried claims, is followed at once by the next pass. A failing pass (the database is
    down) is logged and retried with a growing pause, up to 30 s; the loop itself never dies of
    it. The worker runs in a thread of its own, always the same one (it owns its SMTP
    connection); several loops share one courier, each taking small batches, so they share the
    work.
    """
    loop = asyncio.get_running_loop()
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery")
    failures = 0
    claim_database = True
    try:
        while not stop.is_set():
            # Cleared before the pass: what a nudge until now was about, this pass sees.
            courier.wakeup.clear()
            handed = courier.take(limit)
            claim_database = courier.database_due() or claim_database
            try:
                report = await loop.run_in_executor(
                    thread,
                    functools.partial(
                        worker.deliver_due, limit, handed, claim_database=claim_database
                    ),
                )
            except Exception:
                failures += 1
                logger.exception("outbox.delivery.error", extra={"consecutive_failures": failures})
                # Whatever was handed over is leased: back to the database with it.
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(thread, worker.release, handed)
                await _wait(min(poll_seconds * 2.0**failures, 30.0), None, stop)
                claim_database = True
                continue
            failures = 0
            claim_database = claim_database and report.claimed + report.failed >= limit
            if not claim_database and not courier.carrying():
                # Nothing came for a whole poll: look at the database.
                claim_database = not await _wait(poll_seconds, courier.wakeup, stop)
        # Not in the `finally`: if this task is cancelled mid-pass, the pass's thread still
        # uses the connection, and closing it under that thread would break a send half-way.
        await loop.run_in_executor(thread, worker.release, courier.unbind())
        await loop.run_in_executor(thread, worker.close)
    finally:
        thread.shutdown(wait=False)


async def _wait(seconds: float, wakeup: Nudge | None, stop: asyncio.Event) -> bool:
    """Until the wakeup, `stop` or `seconds`; whether it was not the time that ran out."""
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    if wakeup is not None:
        waiters.append(asyncio.ensure_future(wakeup.wait()))
    try:
        done, _pending = await asyncio.wait(
            waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        return bool(done)
    finally:
        for waiter in waiters:
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)

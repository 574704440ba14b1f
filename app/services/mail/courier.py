"""How queued e-mail reaches a delivery loop: handed over in memory, or claimed from the database.

A message this process queues while its delivery loops run is leased to this process by the very
transaction that queues it (`Outbox.enqueue` asks `Courier.lease_until`: status `sending`, one
attempt), and once that transaction commits its claim is handed to a loop in memory: no claim
transaction and no wait, where a claim costs a transaction of its own (as much CPU as sending the
message, in the benchmark's profile). Everything else stays `pending` and is claimed from the
database (`DeliveryWorker._claim`): messages queued where no loop runs (the CLI, another
process's jobs), those queued while `capacity` handed claims wait, and retries. A handed claim
this process never sends, because it died or stopped first, is claimed again from the database
when its lease runs out, as after any dead worker.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_LEASE_SECONDS = 60.0
# Handed claims waiting for a loop before new messages are left to the database claim instead:
# a few seconds of sending even for a slow relay, so no lease runs short while it waits.
COURIER_CAPACITY = 64
# The sessionmaker's `info` key under which sessions carry their process's courier.
COURIER_KEY = "roamsign.courier"


@dataclass(frozen=True)
class Claim:
    """One message a delivery loop may send: leased to this process until `lease_until`."""

    id: str
    purpose: str
    request_id: str | None
    recipient: str
    sealed_message: bytes | None
    attempts: int
    not_after: datetime | None
    lease_until: datetime


class Nudge:
    """Wakes one idle delivery loop per nudge, where an `asyncio.Event` wakes them all (and
    all but one would find nothing to do). A nudge while every loop is busy is kept until one
    of them looks (`clear` before a pass drops it: that pass sees what it was about). Use it
    from the event loop's thread only (`Courier` hops there)."""

    def __init__(self) -> None:
        self._pending = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def set(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._pending = True

    def clear(self) -> None:
        self._pending = False

    def is_set(self) -> bool:
        return self._pending

    async def wait(self) -> None:
        if self._pending:
            self._pending = False
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter


class Courier:
    """This process's delivery loops, as the outbox sees them (see the module's docstring).

    Thread-safe: request threads call `lease_until`, `hand_over` and `nudge`; the loops, on the
    event loop's thread, `bind` it and take what it carries.
    """

    def __init__(
        self, lease_seconds: float = DEFAULT_LEASE_SECONDS, capacity: int = COURIER_CAPACITY
    ) -> None:
        self.lease = timedelta(seconds=lease_seconds)
        self._capacity = capacity
        # Messages with a deadline (OTPs, codes) go before those without (notices), as in the
        # database claim: under load an OTP must not wait behind earlier flows' notices.
        self._urgent: collections.deque[Claim] = collections.deque()
        self._others: collections.deque[Claim] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._database_due = False
        self.wakeup = Nudge()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start carrying: from now on messages queued in this process are handed over."""
        self.wakeup = Nudge()
        self._loop = loop

    def unbind(self) -> list[Claim]:
        """Stop carrying; returns the claims no loop took (to hand back to the database)."""
        self._loop = None
        return self.take(len(self._urgent) + len(self._others))

    def lease_until(self, now: datetime) -> datetime | None:
        """The lease of a message queued now, or None: leave it pending for a database claim."""
        if self._loop is None or len(self._urgent) + len(self._others) >= self._capacity:
            return None
        return now + self.lease

    def hand_over(self, claim: Claim) -> None:
        """After the commit that queued and leased it: give the claim to an idle loop."""
        (self._others if claim.not_after is None else self._urgent).append(claim)
        self._call(self.wakeup.set)

    def nudge(self) -> None:
        """After a commit that queued messages as `pending`: wake a loop to claim them."""
        self._call(self._wake_for_database)

    def take(self, limit: int) -> list[Claim]:
        """Up to `limit` claims, those with a deadline first."""
        taken: list[Claim] = []
        for claims in (self._urgent, self._others):
            while len(taken) < limit:
                try:
                    taken.append(claims.popleft())
                except IndexError:
                    break
        return taken

    def carrying(self) -> bool:
        return bool(self._urgent or self._others)

    def database_due(self) -> bool:
        """Whether a nudge asked for a database claim since the last call (it clears it).
        On the event loop's thread only, as `Nudge`."""
        due, self._database_due = self._database_due, False
        return due

    def _wake_for_database(self) -> None:
        if self._database_due:
            # A loop will look at its next pass already: the nudges of one unit of work (one
            # per pending message) wake one loop, not one each.
            return
        self._database_due = True
        self.wakeup.set()

    def _call(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback)

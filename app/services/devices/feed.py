"""The app's long-poll for its OTPs (`MessageFeed`).

The wait is asynchronous and holds neither a worker thread nor a database connection; it wakes
at once when this process stores a message for the device (`MESSAGE_SIGNALS`), and looks at the
database every `device_message_poll_seconds` for messages stored by other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Row, true
from sqlalchemy.orm import Session, sessionmaker

from app.clock import Clock
from app.crypto.keys import SealKey
from app.db import Write, after_commit, select_after_writes, send_writes, unit_of_work
from app.errors import SignatureRejected
from app.metrics import DEVICE_MESSAGE_DELAY
from app.models.device import DeviceStatus
from app.services.audit.log import AuditLog
from app.services.devices.auth import (
    SIGNER,
    DeviceAuthenticator,
    SignedRequest,
    forget_expired_nonces,
    rejections_logged,
)
from app.services.devices.messages import (
    DELIVERABLE,
    MOBILE_APP_ACTOR,
    DeviceMessageStore,
    OtpMessage,
)
from app.services.devices.signals import MESSAGE_SIGNALS

MAX_WAIT_SECONDS = 25

# The device, its person and its deliverable messages claimed (locked, skipping those another
# fetch holds), in one statement: a row per message, or one with no message. The claim comes
# before the signature is checked (its rows are locked until the transaction ends, a rolled
# back one for a refused signature), so that the messages go with the nonce, the device's
# last_seen_at and the audit event in a single statement after the check.
_CLAIMABLE = DELIVERABLE.subquery("claimable")
_SIGNER_AND_INBOX = (
    SIGNER.add_columns(*_CLAIMABLE.c).outerjoin(_CLAIMABLE, true()).order_by(_CLAIMABLE.c.id)
)

T = TypeVar("T")


class MessageFeed:
    """GET /v1/devices/{id}/messages: authenticate once, then deliver or wait (long-poll).

    Every database step is its own short unit of work, taken under one of the process's
    database slots (see `Runtime.database_slots`) and run in a thread; between steps the wait
    is a plain `await`, so a waiting phone costs neither a thread nor a connection.
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        database_slots: Callable[[], asyncio.Semaphore],
        clock: Clock,
        seal_key: SealKey,
        audit: Callable[[Session], AuditLog],
        max_skew_seconds: int,
        poll_seconds: float,
    ) -> None:
        self._sessions = sessions
        self._slots = database_slots
        self._clock = clock
        self._seal_key = seal_key
        self._audit = audit
        self._max_skew_seconds = max_skew_seconds
        self._poll_seconds = poll_seconds

    async def fetch(
        self,
        device_id: str,
        request: SignedRequest,
        wait_seconds: float,
        is_connected: Callable[[], Awaitable[bool]],
    ) -> list[OtpMessage]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(wait_seconds, MAX_WAIT_SECONDS))
        # Listen before the first look, so a message stored in between still wakes us.
        with MESSAGE_SIGNALS.listen(device_id) as wakeup:
            delivered = await self._in_unit(
                lambda session: self._authenticate_and_claim(session, device_id, request)
            )
            while not delivered and (remaining := deadline - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        wakeup.wait(), timeout=min(self._poll_seconds, remaining)
                    )
                wakeup.clear()
                if not await is_connected():
                    # Claiming now would wipe messages nobody is left to receive.
                    return []
                delivered = await self._in_unit(
                    lambda session: self._claim_if_active(session, device_id)
                )
        return delivered

    async def _in_unit(self, work: Callable[[Session], T]) -> T:
        # The slot first, then a thread of the same pool the request handlers use (as the
        # session dependency does): never a thread held while waiting for a slot.
        async with self._slots():
            return await anyio.to_thread.run_sync(self._run, work)

    def _run(self, work: Callable[[Session], T]) -> T:
        with unit_of_work(self._sessions) as session:
            return work(session)

    def _authenticate_and_claim(
        self, session: Session, device_id: str, request: SignedRequest
    ) -> list[OtpMessage]:
        now = self._clock.now()
        authenticator = DeviceAuthenticator(session, self._max_skew_seconds)
        authenticator.require_signature(request, device_id)
        rows = select_after_writes(
            session,
            _SIGNER_AND_INBOX,
            {"device_id": device_id},
            [forget_expired_nonces(device_id, now)],
            core=True,
        ).all()
        writes = authenticator.verify(request, device_id, rows[0] if rows else None, now)
        return self._deliver(session, rows, writes, now)

    def _claim_if_active(self, session: Session, device_id: str) -> list[OtpMessage]:
        now = self._clock.now()
        rows = session.connection().execute(_SIGNER_AND_INBOX, {"device_id": device_id}).all()
        if not rows or rows[0].status != DeviceStatus.ACTIVE:
            raise SignatureRejected("this device was deactivated while it waited")
        return self._deliver(session, rows, [], now)

    def _deliver(
        self, session: Session, rows: Sequence[Row[Any]], writes: list[Write], now: datetime
    ) -> list[OtpMessage]:
        """The messages claimed in `rows` (`_SIGNER_AND_INBOX`'s), each delivered with its
        audit event; the claim's marks and `writes` go with the first event (or on their own
        when nothing is delivered)."""
        signer = rows[0]
        claimed = [row for row in rows if row.id is not None]
        delivered, takes = DeviceMessageStore(session, self._seal_key).sort(
            signer.device_id, claimed, now
        )
        together = [*writes, *takes]
        with rejections_logged(signer.device_id):
            if not delivered:
                send_writes(session, together)
                return []
            audit = self._audit(session)
            for message, queued_at in delivered:
                delay = (now - queued_at).total_seconds()
                after_commit(session, functools.partial(DEVICE_MESSAGE_DELAY.observe, delay))
                audit.record(
                    now=now,
                    action="otp.delivered",
                    actor=MOBILE_APP_ACTOR,
                    mykad=signer.mykad,
                    target_id=message.request_id,
                    details={"device_id": signer.device_id, "delay_ms": round(delay * 1000)},
                    together=together,
                )
                together = []
        return [message for message, _queued_at in delivered]

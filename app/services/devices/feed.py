"""The app's long-poll for its OTPs (`MessageFeed`).

The wait is asynchronous and holds neither a worker thread nor a database connection; it wakes
at once when this process stores a message for the device (`MESSAGE_SIGNALS`), and looks at the
database every `device_message_poll_seconds` for messages stored by other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import anyio.to_thread
from sqlalchemy.orm import Session, sessionmaker

from app.clock import Clock
from app.crypto.keys import SealKey
from app.db import after_commit, unit_of_work
from app.errors import SignatureRejected
from app.metrics import DEVICE_MESSAGE_DELAY
from app.models import User
from app.models.device import Device, DeviceStatus
from app.services.audit.log import AuditLog
from app.services.devices.auth import DeviceAuthenticator, SignedRequest
from app.services.devices.messages import MOBILE_APP_ACTOR, DeviceMessageStore, OtpMessage
from app.services.devices.signals import MESSAGE_SIGNALS

MAX_WAIT_SECONDS = 25

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
        device = DeviceAuthenticator(session, self._max_skew_seconds).authenticate(
            request, device_id, now
        )
        return self._claim(session, device, now)

    def _claim_if_active(self, session: Session, device_id: str) -> list[OtpMessage]:
        now = self._clock.now()
        store = DeviceMessageStore(session, self._seal_key)
        device = session.get(Device, device_id)
        if device is None or device.status != DeviceStatus.ACTIVE:
            raise SignatureRejected("this device was deactivated while it waited")
        if not store.has_pending(device_id):
            return []
        return self._claim(session, device, now)

    def _claim(self, session: Session, device: Device, now: datetime) -> list[OtpMessage]:
        claimed = DeviceMessageStore(session, self._seal_key).claim(device.id, now)
        if not claimed:
            return []
        user = session.get(User, device.user_id)
        assert user is not None  # foreign key
        audit = self._audit(session)
        for message, queued_at in claimed:
            delay = (now - queued_at).total_seconds()
            after_commit(session, functools.partial(DEVICE_MESSAGE_DELAY.observe, delay))
            audit.record(
                now=now,
                action="otp.delivered",
                actor=MOBILE_APP_ACTOR,
                mykad=user.mykad,
                target_id=message.request_id,
                details={"device_id": device.id, "delay_ms": round(delay * 1000)},
            )
        return [message for message, _queued_at in claimed]

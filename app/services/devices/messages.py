"""OTPs for MyGPKI Mobile: stored for the device, forwarded when it asks (FAQ 4).

An OTP for a person with an active device waits in `device_messages`, sealed with AES-GCM
(bound to the device and the signing request) until the device fetches it; then it is wiped.
The window is e-mail's, counted from issue: a phone that was off gets, when it is back, what
is still valid and nothing else, and whatever expired (or whose request ended) is wiped
without ever being delivered. Each message is delivered once, in issue order: a fetch claims
with `SELECT ... FOR UPDATE SKIP LOCKED` plus a conditional update, so two concurrent fetches
never both get it.

The app long-polls (`MessageFeed`): the wait is asynchronous and holds neither a worker
thread nor a database connection; it wakes at once when this process stores a message for
the device (`MESSAGE_SIGNALS`), and looks at the database every
`device_message_poll_seconds` for messages stored by other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TypeVar

import anyio.to_thread
from sqlalchemy import Table, and_, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.clock import Clock
from app.crypto.sealing import open_sealed, seal
from app.db import after_commit, unit_of_work
from app.errors import SignatureRejected
from app.metrics import DEVICE_MESSAGE_DELAY
from app.models import RequestStatus, SigningRequest, User
from app.models.device import Device, DeviceMessage, DeviceMessageStatus, DeviceStatus
from app.services.audit.log import AuditLog
from app.services.devices.auth import DeviceAuthenticator, SignedRequest

logger = logging.getLogger("roamsign.devices")

MOBILE_APP_ACTOR = "mobile-app"
MAX_WAIT_SECONDS = 25

T = TypeVar("T")

_MESSAGES: Table = DeviceMessage.__table__  # type: ignore[assignment]
_REQUESTS: Table = SigningRequest.__table__  # type: ignore[assignment]
# Built once and run on the session's connection: every inbox fetch runs them, and building
# them and taking them through the ORM cost more than the database's work.
_PENDING_FOR_DEVICE = and_(
    _MESSAGES.c.device_id == bindparam("device_id"),
    _MESSAGES.c.status == DeviceMessageStatus.PENDING,
)
_DELIVERABLE = (
    select(
        _MESSAGES.c.id,
        _MESSAGES.c.request_id,
        _MESSAGES.c.sealed_payload,
        _MESSAGES.c.created_at,
        _MESSAGES.c.expires_at,
        _REQUESTS.c.status.label("request_status"),
        _REQUESTS.c.authorized_at,
    )
    .join(_REQUESTS, _REQUESTS.c.id == _MESSAGES.c.request_id)
    .where(_PENDING_FOR_DEVICE)
    .order_by(_MESSAGES.c.id)
    .with_for_update(of=_MESSAGES, skip_locked=True)
)
_NEW_MESSAGE = _MESSAGES.insert()  # the values come as parameters; the id is the database's
_ANY_PENDING = select(_MESSAGES.c.id).where(_PENDING_FOR_DEVICE).limit(1)
_TAKE = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.id == bindparam("message_id"),
        _MESSAGES.c.status == DeviceMessageStatus.PENDING,
    )
    .values(
        status=bindparam("outcome"), sealed_payload=None, delivered_at=bindparam("delivered_at")
    )
    .returning(_MESSAGES.c.id)
)


@dataclass(frozen=True, repr=False)
class OtpMessage:
    """What the app shows the person: the code, what it signs, for whom, until when."""

    request_id: str
    otp: str
    document_name: str
    requesting_system: str
    hash_algorithm: str
    document_fingerprint: str
    issued_at: datetime
    expires_at: datetime

    def __repr__(self) -> str:
        return f"OtpMessage(request_id={self.request_id!r})"

    def encode(self) -> bytes:
        fields = asdict(self)
        fields["issued_at"] = self.issued_at.isoformat()
        fields["expires_at"] = self.expires_at.isoformat()
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, data: bytes) -> OtpMessage:
        fields = json.loads(data)
        fields["issued_at"] = datetime.fromisoformat(fields["issued_at"])
        fields["expires_at"] = datetime.fromisoformat(fields["expires_at"])
        return cls(**fields)


def associated_data(device_id: str, request_id: str) -> bytes:
    """A sealed message opens only for its device and its signing request (and the "device-
    message" context keeps it apart from outbox blobs sealed under the same key)."""
    return f"device-message:{device_id}:{request_id}".encode()


def mobile_destination(device: Device) -> str:
    """Where an OTP went, as the signing request shows it: platform and the number's end."""
    return f"MyGPKI Mobile ({device.platform}, ****{device.phone_last4})"


def withdraw_pending(session: Session, device_ids: list[str], now: datetime) -> None:
    """Wipe what deactivated devices have not fetched: they fetch nothing more."""
    del now
    if not device_ids:
        return
    session.execute(
        update(DeviceMessage)
        .where(
            DeviceMessage.device_id.in_(device_ids),
            DeviceMessage.status == DeviceMessageStatus.PENDING,
        )
        .values(status=DeviceMessageStatus.WITHDRAWN, sealed_payload=None)
        .execution_options(synchronize_session=False)
    )


def wipe_expired(session: Session, now: datetime) -> int:
    """Wipe every message past its window that no device fetched (for the periodic jobs:
    an uninstalled app never fetches, so its expired messages are wiped here)."""
    wiped = session.execute(
        update(DeviceMessage)
        .where(
            DeviceMessage.status == DeviceMessageStatus.PENDING,
            DeviceMessage.expires_at <= now,
        )
        .values(status=DeviceMessageStatus.EXPIRED, sealed_payload=None)
        .returning(DeviceMessage.id)
        .execution_options(synchronize_session=False)
    )
    return len(wiped.all())


class DeviceMessageStore:
    """Stores and claims a device's OTP messages in the caller's session; never commits."""

    def __init__(self, session: Session, seal_key: bytes) -> None:
        self.session = session
        self._seal_key = seal_key

    def enqueue(self, device: Device, message: OtpMessage, now: datetime) -> None:
        # A Core insert: the row is only ever changed by the claim's own statements.
        self.session.connection().execute(
            _NEW_MESSAGE,
            {
                "device_id": device.id,
                "request_id": message.request_id,
                "sealed_payload": seal(
                    self._seal_key,
                    message.encode(),
                    associated_data(device.id, message.request_id),
                ),
                "status": DeviceMessageStatus.PENDING,
                "created_at": now,
                "expires_at": message.expires_at,
            },
        )
        # Wake this process's long-polls once the message is visible to them.
        after_commit(self.session, functools.partial(MESSAGE_SIGNALS.notify, device.id))
        logger.info(
            "device.message.queued",
            extra={"device_id": device.id, "signing_request_id": message.request_id},
        )

    def has_pending(self, device_id: str) -> bool:
        pending = self.session.connection().execute(_ANY_PENDING, {"device_id": device_id})
        return pending.first() is not None

    def claim(self, device_id: str, now: datetime) -> list[tuple[OtpMessage, datetime]]:
        """The device's deliverable messages, oldest first, marked delivered and wiped, each
        with when it was queued.

        Expired ones, and those whose request was signed, cancelled or locked meanwhile, are
        wiped instead. Rows another fetch holds are skipped (PostgreSQL); SQLite's write lock
        serialises fetches anyway.
        """
        connection = self.session.connection()
        rows = connection.execute(_DELIVERABLE, {"device_id": device_id}).all()
        delivered: list[tuple[OtpMessage, datetime]] = []
        for row in rows:
            if row.expires_at <= now:
                outcome = DeviceMessageStatus.EXPIRED
            elif row.request_status != RequestStatus.PENDING or row.authorized_at is not None:
                outcome = DeviceMessageStatus.WITHDRAWN
            else:
                outcome = DeviceMessageStatus.DELIVERED
            taken = connection.execute(
                _TAKE,
                {
                    "message_id": row.id,
                    "outcome": outcome,
                    "delivered_at": now if outcome == DeviceMessageStatus.DELIVERED else None,
                },
            ).first()
            sealed = row.sealed_payload
            if taken is None or outcome != DeviceMessageStatus.DELIVERED or sealed is None:
                continue
            message = OtpMessage.decode(
                open_sealed(self._seal_key, sealed, associated_data(device_id, row.request_id))
            )
            delivered.append((message, row.created_at))
        return delivered


class MessageSignals:
    """Wakes this process's long-polls for a device when a message for it is committed.

    Thread-safe: messages are stored from worker threads, waiters live on the event loop.
    Other processes are not reached; their long-polls find the message on their next poll.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    @contextlib.contextmanager
    def listen(self, device_id: str) -> Iterator[asyncio.Event]:
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(device_id, set()).add(waiter)
        try:
            yield waiter[1]
        finally:
            with self._lock:
                waiters = self._waiters.get(device_id, set())
                waiters.discard(waiter)
                if not waiters:
                    self._waiters.pop(device_id, None)

    def notify(self, device_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(device_id, ()))
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)


# One per process, like the metrics: the signing service notifies it, the long-polls listen.
MESSAGE_SIGNALS = MessageSignals()


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
        seal_key: bytes,
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

"""OTPs for MyGPKI Mobile: stored for the device, forwarded when it asks (FAQ 4).

An OTP for a person with an active device waits in `device_messages`, sealed with AES-GCM
(bound to the device and the signing request) until the device fetches it; then it is wiped.
The window is e-mail's, counted from issue: a phone that was off gets, when it is back, what
is still valid and nothing else, and whatever expired (or whose request ended) is wiped
without ever being delivered. Each message is delivered once, in issue order: a fetch claims
with `SELECT ... FOR UPDATE SKIP LOCKED` (rows another fetch holds are skipped) and marks what
it claimed before its commit, so two concurrent fetches never both get it.

The app long-polls for them (`app.services.devices.feed`).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, select, update
from sqlalchemy.orm import Session

from app.crypto.keys import SealKey
from app.db import Write, after_commit, send_writes
from app.models import RequestStatus, SigningRequest
from app.models.device import Device, DeviceMessage, DeviceMessageStatus
from app.services.devices.signals import MESSAGE_SIGNALS

logger = logging.getLogger("roamsign.devices")

MOBILE_APP_ACTOR = "mobile-app"


_MESSAGES: Table = DeviceMessage.__table__  # type: ignore[assignment]
_REQUESTS: Table = SigningRequest.__table__  # type: ignore[assignment]
# Built once and run on the session's connection: every inbox fetch runs them, and building
# them and taking them through the ORM cost more than the database's work.
_PENDING_FOR_DEVICE = and_(
    _MESSAGES.c.device_id == bindparam("device_id"),
    _MESSAGES.c.status == DeviceMessageStatus.PENDING,
)
DELIVERABLE = (
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
# Marks a claimed row: it holds the claim's lock (PostgreSQL) or SQLite's write lock, so it is
# still pending and nothing needs to be read back.
_TAKE = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.id == bindparam("message_id"),
        _MESSAGES.c.status == DeviceMessageStatus.PENDING,
    )
    .values(
        status=bindparam("outcome"), sealed_payload=None, delivered_at=bindparam("delivered_at")
    )
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

    def __init__(self, session: Session, seal_key: SealKey) -> None:
        self.session = session
        self._seal_key = seal_key

    def enqueue(self, device: Device, message: OtpMessage, now: datetime) -> None:
        # A Core insert: the row is only ever changed by the claim's own statements.
        write = self.prepare(device, message, now)
        self.session.connection().execute(write.statement, write.params)

    def prepare(self, device: Device, message: OtpMessage, now: datetime) -> Write:
        """`enqueue`, the insert returned to be written with the audit event."""
        write = Write(
            _NEW_MESSAGE,
            {
                "device_id": device.id,
                "request_id": message.request_id,
                "sealed_payload": self._seal_key.seal(
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
        return write

    def claim(self, device_id: str, now: datetime) -> list[tuple[OtpMessage, datetime]]:
        """The device's deliverable messages, oldest first, marked delivered and wiped, each
        with when it was queued (see `sort`). Rows another fetch holds are skipped
        (PostgreSQL); SQLite's write lock serialises fetches anyway."""
        rows = self.session.connection().execute(DELIVERABLE, {"device_id": device_id}).all()
        delivered, takes = self.sort(device_id, rows, now)
        send_writes(self.session, takes)
        return delivered

    def sort(
        self, device_id: str, claimed: Sequence[Any], now: datetime
    ) -> tuple[list[tuple[OtpMessage, datetime]], list[Write]]:
        """What to deliver of the rows `DELIVERABLE` claimed (in this transaction: they stay
        locked until it ends), each with when it was queued, and the writes that mark every
        row: delivered and wiped, or wiped undelivered when it expired or its request was
        signed, cancelled or locked meanwhile. The writes must be sent in this transaction."""
        delivered: list[tuple[OtpMessage, datetime]] = []
        takes: list[Write] = []
        for row in claimed:
            if row.expires_at <= now:
                outcome = DeviceMessageStatus.EXPIRED
            elif row.request_status != RequestStatus.PENDING or row.authorized_at is not None:
                outcome = DeviceMessageStatus.WITHDRAWN
            else:
                outcome = DeviceMessageStatus.DELIVERED
            takes.append(
                Write(
                    _TAKE,
                    {
                        "message_id": row.id,
                        "outcome": outcome,
                        "delivered_at": now if outcome == DeviceMessageStatus.DELIVERED else None,
                    },
                )
            )
            sealed = row.sealed_payload
            if outcome != DeviceMessageStatus.DELIVERED or sealed is None:
                continue
            message = OtpMessage.decode(
                self._seal_key.open(sealed, associated_data(device_id, row.request_id))
            )
            delivered.append((message, row.created_at))
        return delivered, takes

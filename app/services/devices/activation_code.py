"""The activation code: kept only as a MAC bound to its device, and how it reaches the person."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from app.crypto.keys import MacKey
from app.errors import NoEmailAddress
from app.models import User
from app.models.device import Device
from app.services.devices.eligibility import PLATFORM_NAMES
from app.services.mail.notices import NoticeContext
from app.services.mail.outbox import Outbox
from app.services.mail.texts.devices import ActivationCodeNotice


def activation_code_mac(key: MacKey, device_id: str, code: str) -> bytes:
    """The code's MAC, bound to its device: a code for one registration opens no other."""
    message = b"".join(
        len(part).to_bytes(4, "big") + part for part in (device_id.encode(), code.encode())
    )
    return key.mac(message)


class ActivationCodeSender(Protocol):
    """How an activation code reaches the person: e-mail today; SMS can plug in here later.

    Called in the registration's transaction; an implementation queues, it never waits on a
    network. Raises a `DomainError` when the person cannot be reached this way.
    """

    def send(self, *, user: User, device: Device, code: str, now: datetime) -> None: ...


class EmailActivationCodeSender:
    """Queues the code in the outbox, to the person's registered address only."""

    def __init__(self, session: Session, notices: NoticeContext) -> None:
        self.session = session
        self._notices = notices

    def send(self, *, user: User, device: Device, code: str, now: datetime) -> None:
        if not user.email:
            raise NoEmailAddress(
                "this person has no registered e-mail address for the activation code"
            )
        notice = ActivationCodeNotice(
            code=code,
            name=user.name,
            platform=PLATFORM_NAMES[device.platform],
            os_version=device.os_version,
            expires_at=device.activation_expires_at,
            device_id=device.id,
        )
        Outbox(self.session, self._notices.seal_key).enqueue(
            purpose="device_activation",
            recipient=user.email,
            subject=notice.subject(),
            body=notice.body(self._notices.zone),
            now=now,
            not_after=device.activation_expires_at,
        )

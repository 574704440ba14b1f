"""Helpers shared by the test suites: a signing request's body, reading an OTP the way the
person would, checking a signature with openssl, a device waiting for its activation code."""

from __future__ import annotations

import email
import hashlib
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from app.crypto.keys import SealKey
from app.db import unit_of_work
from app.models import OutboxMessage
from app.models.device import Device, DeviceStatus
from app.runtime import Runtime
from app.services.devices.activation_code import activation_code_mac
from app.services.mail.outbox import open_message
from tests.factories import Person

OTP_LINE = re.compile(r"^Kod OTP / OTP code: (\d{6})\r?$", re.MULTILINE)


def document_hash(text: str = "Baucar Bayaran PV-2026-000123", algorithm: str = "sha256") -> str:
    return hashlib.new(algorithm, text.encode()).hexdigest()


def signing_request_body(person: Person, document: str = "PV-1", **fields: Any) -> dict[str, Any]:
    """The body of `POST /v1/signing-requests` for `person`: the hash of `document`, then
    `fields` (channel, document_hash, ...), which win."""
    return {
        "mykad": person.mykad,
        "document_hash": document_hash(document),
        "document_name": "Baucar Bayaran PV-2026-000123",
        **fields,
    }


def otp_from_message(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    match = OTP_LINE.search(body.get_content())
    assert match, "no OTP line in the e-mail"
    return match.group(1)


def queued_message(
    sessions: sessionmaker[Session], seal_key: SealKey, request_id: str
) -> EmailMessage:
    """The OTP e-mail still in the outbox for this request, opened as the worker would."""
    with sessions() as session:
        row = session.scalars(
            select(OutboxMessage).where(OutboxMessage.request_id == request_id)
        ).one()
        raw = open_message(seal_key, row)
    message = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


def queued_otp(sessions: sessionmaker[Session], seal_key: SealKey, request_id: str) -> str:
    return otp_from_message(queued_message(sessions, seal_key, request_id))


@contextmanager
def flushed_new_objects(sessions: sessionmaker[Session]) -> Iterator[list[object]]:
    """Every new object the sessions of `sessions` flush through the ORM meanwhile."""
    flushed: list[object] = []

    def record(session: Session, _context: object, _instances: object) -> None:
        flushed.extend(session.new)

    event.listen(sessions, "before_flush", record)
    try:
        yield flushed
    finally:
        event.remove(sessions, "before_flush", record)


def openssl_verify(
    signature: Path, content: Path, root: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    """`openssl cms -verify` of a detached DER signature over `content`, under `root`; `options`
    (`-certfile`, `-attime`, ...) go before the output."""
    return subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            str(signature),
            "-content",
            str(content),
            "-CAfile",
            str(root),
            *options,
            "-out",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def pending_device(runtime: Runtime, person: Person, code: str) -> str:
    """A device waiting for `code`, made directly: two registrations that raced each other
    (each ends only the pending ones it can see) leave two such devices."""
    now = runtime.clock.now()
    with unit_of_work(runtime.sessions) as session:
        device = Device(
            user_id=person.user_id,
            platform="android",
            os_version="14",
            phone_last4="6789",
            status=DeviceStatus.PENDING_ACTIVATION,
            activation_attempts=0,
            activation_expires_at=now + timedelta(minutes=10),
            created_at=now,
        )
        session.add(device)
        session.flush()
        device.activation_code_mac = activation_code_mac(
            runtime.keys.activation_code_mac, device.id, code
        )
        return device.id

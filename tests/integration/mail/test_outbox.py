"""The outbox against a real database: what it stores and what it refuses to queue."""

from __future__ import annotations

import uuid
from datetime import timedelta
from email.parser import BytesParser
from email.policy import default

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.crypto.keys import DerivedKeys, Secrets, software_secrets
from app.crypto.sealing import SealBroken
from app.models.outbox import OutboxMessage, OutboxStatus
from app.services.mail.outbox import Outbox, associated_data, open_message
from tests.integration.mail.helpers import BODY, CODE, RECIPIENT, SUBJECT


def test_enqueue_stores_only_ciphertext_bound_to_the_row(
    session: Session, keys: Secrets, clock: FrozenClock
) -> None:
    request_id = str(uuid.uuid4())
    message = Outbox(session, keys.outbox_seal).enqueue(
        purpose="otp",
        recipient=RECIPIENT,
        subject=SUBJECT,
        body=BODY,
        now=clock.now(),
        request_id=request_id,
        not_after=clock.now() + timedelta(seconds=120),
        headers={"X-Roamsign-Request-Id": request_id},
    )
    session.commit()
    session.expire_all()

    stored = session.get(OutboxMessage, message.id)
    assert stored is not None
    assert stored.status == OutboxStatus.PENDING
    assert stored.next_attempt_at == clock.now()
    sealed = stored.sealed_message
    assert sealed is not None
    assert CODE.encode() not in sealed
    assert b"Kod OTP" not in sealed
    assert b"Baucar" not in sealed

    plain = open_message(keys.outbox_seal, stored)
    assert f"Kod OTP / OTP code: {CODE}".encode() in plain
    assert plain.count(b"X-Roamsign-Request-Id:") == 1
    assert b"\nFrom:" not in plain  # added by the worker from the settings
    for wrong in (
        associated_data(str(uuid.uuid4()), request_id, RECIPIENT),
        associated_data(message.id, str(uuid.uuid4()), RECIPIENT),
        associated_data(message.id, None, RECIPIENT),
        associated_data(message.id, request_id, "mallory@example.com"),
    ):
        with pytest.raises(SealBroken):
            keys.outbox_seal.open(sealed, wrong)
    with pytest.raises(SealBroken):
        software_secrets(DerivedKeys.from_master(b"\x01" * 32)).outbox_seal.open(
            sealed, associated_data(message.id, request_id, RECIPIENT)
        )


def test_enqueue_is_part_of_the_callers_transaction(
    sessions: sessionmaker[Session], keys: Secrets, clock: FrozenClock
) -> None:
    with sessions() as session:
        Outbox(session, keys.outbox_seal).enqueue(
            purpose="otp", recipient=RECIPIENT, subject=SUBJECT, body=BODY, now=clock.now()
        )
        session.rollback()
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


@pytest.mark.parametrize(
    "headers",
    [{"Subject": "other"}, {"from": "x@example.com"}, {"X-Roamsign-Request-Id": "another"}],
)
def test_enqueue_refuses_headers_it_owns(
    session: Session, keys: Secrets, clock: FrozenClock, headers: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        Outbox(session, keys.outbox_seal).enqueue(
            purpose="otp",
            recipient=RECIPIENT,
            subject=SUBJECT,
            body=BODY,
            now=clock.now(),
            request_id=str(uuid.uuid4()),
            headers=headers,
        )


@pytest.mark.parametrize(
    ("subject", "headers"),
    [("OTP\r\nBcc: x@example.com", None), ("OTP", {"X-Note": "a\nBcc: x@example.com"})],
)
def test_enqueue_refuses_line_breaks_in_headers(
    session: Session,
    keys: Secrets,
    clock: FrozenClock,
    subject: str,
    headers: dict[str, str] | None,
) -> None:
    with pytest.raises(ValueError, match="line breaks"):
        Outbox(session, keys.outbox_seal).enqueue(
            purpose="notice",
            recipient=RECIPIENT,
            subject=subject,
            body=BODY,
            now=clock.now(),
            headers=headers,
        )


def test_non_ascii_subject_and_long_lines_round_trip(
    session: Session, keys: Secrets, clock: FrozenClock
) -> None:
    subject = "Notis tandatangan: Baucar bayaran — Pérolehan " + "x" * 80
    body = "Dokumen «Tender 2026/11» ditandatangani.\n" + "y" * 200 + "\nKod: 123456\n"
    row = Outbox(session, keys.outbox_seal).enqueue(
        purpose="notice", recipient=RECIPIENT, subject=subject, body=body, now=clock.now()
    )

    raw = open_message(keys.outbox_seal, row)
    parsed = BytesParser(policy=default).parsebytes(raw)

    assert parsed["Subject"] == subject
    assert parsed.get_content().replace("\r\n", "\n") == body  # as an SMTP server sees it
    assert parsed["Date"].datetime == clock.now()
    assert raw.isascii()  # 7-bit clean: quoted-printable body, RFC 2047 subject
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    assert b"Kod: 123456" in raw  # the code line stays readable in the raw message

"""Helpers shared by the test suites: reading an OTP the way the person would, checking a
signature with openssl."""

from __future__ import annotations

import email
import hashlib
import re
import subprocess
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.models import OutboxMessage
from app.services.outbox import open_message

OTP_LINE = re.compile(r"^Kod OTP / OTP code: (\d{6})\r?$", re.MULTILINE)


def document_hash(text: str = "Baucar Bayaran PV-2026-000123", algorithm: str = "sha256") -> str:
    return hashlib.new(algorithm, text.encode()).hexdigest()


def otp_from_message(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    match = OTP_LINE.search(body.get_content())
    assert match, "no OTP line in the e-mail"
    return match.group(1)


def queued_message(
    sessions: sessionmaker[Session], seal_key: bytes, request_id: str
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


def queued_otp(sessions: sessionmaker[Session], seal_key: bytes, request_id: str) -> str:
    return otp_from_message(queued_message(sessions, seal_key, request_id))


def openssl_verify(signature: Path, content: Path, root: Path) -> subprocess.CompletedProcess[str]:
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
            "-out",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        check=False,
    )

"""The transactional outbox: e-mail written in the caller's transaction, sealed at rest.

A use case that must tell someone something (an OTP, a token) calls `Outbox.enqueue` in the same
session as its business change; the caller's commit stores both or neither. The delivery
worker (`app.services.mail.delivery`) sends it later. The message is kept whole (headers and
body) and sealed with AES-GCM under the outbox key, bound to its row: a database reader sees
recipients and purposes, never a code or a token.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from email.charset import QP, SHORTEST, Charset
from email.header import Header
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import format_datetime, parseaddr

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from app.crypto.keys import SealKey
from app.db import Write, after_commit
from app.models.base import new_id
from app.models.outbox import OutboxMessage, OutboxStatus
from app.services.mail.courier import COURIER_KEY, Claim, Courier

logger = logging.getLogger("roamsign.outbox")

MESSAGE_ID_DOMAIN = "roamsign.local"
REQUEST_ID_HEADER = "X-Roamsign-Request-Id"
# Set here or by the worker (From); a caller-supplied copy would be ambiguous.
_RESERVED_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version", "sender"}
)
# Quoted-printable keeps the message 7-bit clean for relays without 8BITMIME, while the ASCII
# lines (such as the OTP line) stay readable in the raw message; a non-ASCII subject becomes
# RFC 2047 encoded words.
_UTF8 = Charset("utf-8")
_UTF8.body_encoding = QP
_UTF8.header_encoding = SHORTEST
_LINE_BREAKS = ("\r", "\n")
_MESSAGES: Table = OutboxMessage.__table__  # type: ignore[assignment]
_INSERT_MESSAGE = insert(_MESSAGES)  # built once; the values come as parameters


def associated_data(message_id: str, request_id: str | None, recipient: str) -> bytes:
    """What a sealed message is bound to: its row, its signing request and its recipient.

    A blob copied to another row, or a row whose recipient was rewritten, no longer opens.
    """
    return f"outbox:{message_id}:{request_id or ''}:{recipient}".encode()


def open_message(seal_key: SealKey, message: OutboxMessage) -> bytes:
    """The RFC 5322 bytes (CRLF line ends, no From header) of a message not yet wiped."""
    if message.sealed_message is None:
        raise ValueError(f"outbox message {message.id} holds no message (sent or wiped)")
    return seal_key.open(
        message.sealed_message,
        associated_data(message.id, message.request_id, message.recipient),
    )


class Outbox:
    """Queues e-mail in the caller's session; never commits (the caller's commit does)."""

    def __init__(self, session: Session, seal_key: SealKey) -> None:
        self.session = session
        self._seal_key = seal_key

    def enqueue(
        self,
        *,
        purpose: str,
        recipient: str,
        subject: str,
        body: str,
        now: datetime,
        request_id: str | None = None,
        not_after: datetime | None = None,
        headers: dict[str, str] | None = None,
    ) -> OutboxMessage:
        """Seal one text/plain UTF-8 message to `recipient` and insert it in the session's
        transaction; returns a detached copy of the row.

        `not_after` is the instant after which the message must never go out (an OTP past its
        window). The session's courier, if it has one, learns of the message after the commit.
        """
        write = self.prepare(
            purpose=purpose,
            recipient=recipient,
            subject=subject,
            body=body,
            now=now,
            request_id=request_id,
            not_after=not_after,
            headers=headers,
        )
        # A Core insert in the session's transaction: the row is only ever changed by the
        # delivery worker's own statements, so the ORM's unit of work would only add cost.
        self.session.connection().execute(write.statement, write.params)
        return OutboxMessage(**write.params)

    def prepare(
        self,
        *,
        purpose: str,
        recipient: str,
        subject: str,
        body: str,
        now: datetime,
        request_id: str | None = None,
        not_after: datetime | None = None,
        headers: dict[str, str] | None = None,
    ) -> Write:
        """`enqueue`, but the insert is returned for the caller to write in this unit (with
        its audit event: `AuditLog.record(together=...)`) rather than written here."""
        if not purpose or len(purpose) > 32:
            raise ValueError("purpose must be 1 to 32 characters")
        if len(recipient) > 254 or "@" not in recipient or parseaddr(recipient)[1] != recipient:
            raise ValueError("recipient must be a bare e-mail address")
        if not_after is not None and not_after <= now:
            raise ValueError("not_after is already past")

        message_id = new_id()
        message = _render(
            recipient=recipient,
            subject=subject,
            body=body,
            date=now,
            # Stable across retries, so a receiving MTA can drop the duplicate of an
            # at-least-once redelivery (see app.services.mail.delivery).
            message_id=f"<{message_id}@{MESSAGE_ID_DOMAIN}>",
            extra_headers=_extra_headers(request_id, headers),
        )
        # Leased to this process's delivery loops at once when they run here (see
        # app.services.mail.courier); otherwise pending, for a loop to claim from the database.
        courier: Courier | None = self.session.info.get(COURIER_KEY)
        lease_until = (
            courier.lease_until(now)
            # A savepoint may yet be rolled back, but a claim handed over would still be sent.
            if courier is not None and not self.session.in_nested_transaction()
            else None
        )
        sealed = self._seal_key.seal(message, associated_data(message_id, request_id, recipient))
        values = {
            "id": message_id,
            "purpose": purpose,
            "request_id": request_id,
            "recipient": recipient,
            "sealed_message": sealed,
            "status": OutboxStatus.PENDING if lease_until is None else OutboxStatus.SENDING,
            "attempts": 0 if lease_until is None else 1,
            "lease_until": lease_until,
            "created_at": now,
            "next_attempt_at": now,
            "not_after": not_after,
        }
        # Either way the delivery loops learn of it after the commit: before it they cannot
        # see the row, and after a rollback there is nothing to send.
        if courier is not None and lease_until is None:
            after_commit(self.session, courier.nudge)
        elif courier is not None and lease_until is not None:
            claim = Claim(
                id=message_id,
                purpose=purpose,
                request_id=request_id,
                recipient=recipient,
                sealed_message=sealed,
                attempts=1,
                not_after=not_after,
                lease_until=lease_until,
            )
            after_commit(self.session, functools.partial(courier.hand_over, claim))
        logger.info(
            "outbox.message.queued",
            extra={"outbox_id": message_id, "purpose": purpose, "signing_request_id": request_id},
        )
        return Write(_INSERT_MESSAGE, values)


def _render(
    *,
    recipient: str,
    subject: str,
    body: str,
    date: datetime,
    message_id: str,
    extra_headers: dict[str, str],
) -> bytes:
    """The RFC 5322 bytes of one text/plain UTF-8 message, CRLF line ends, no From header.

    Built with the email package's compat32 classes: the same encodings as the modern
    `EmailMessage` API at a third of its cost (its header parsing and folding showed up as a
    tenth of the signing flow's CPU). compat32 does not refuse line breaks in header values,
    so this function does: no caller text can add a header.
    """
    headers = {"To": recipient, "Subject": subject, **extra_headers}
    for name, value in headers.items():
        if any(mark in value for mark in _LINE_BREAKS):
            raise ValueError(f"header {name} must not contain line breaks")
    message = MIMENonMultipart("text", "plain")
    message.set_payload(body, _UTF8)
    message["To"] = recipient
    message["Subject"] = (
        subject if subject.isascii() else Header(subject, _UTF8, header_name="Subject").encode()
    )
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to us
    for name, value in extra_headers.items():
        message[name] = value
    return message.as_bytes().replace(b"\n", b"\r\n")


def _extra_headers(request_id: str | None, headers: dict[str, str] | None) -> dict[str, str]:
    extra: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in (headers or {}).items():
        lowered = name.lower()
        if lowered in _RESERVED_HEADERS or lowered.startswith("content-"):
            raise ValueError(f"header {name} is set by the outbox itself")
        if lowered == REQUEST_ID_HEADER.lower() and request_id not in (None, value):
            raise ValueError(f"{REQUEST_ID_HEADER} differs from request_id")
        if lowered in seen:
            raise ValueError(f"header {name} given twice")
        seen.add(lowered)
        extra[REQUEST_ID_HEADER if lowered == REQUEST_ID_HEADER.lower() else name] = value
    if request_id is not None:
        extra.setdefault(REQUEST_ID_HEADER, request_id)
    return extra

"""Reading the lifecycle e-mails the way the person would: from the outbox, opened."""

from __future__ import annotations

import email
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.crypto.keys import SealKey
from app.models import OutboxMessage
from app.services.mail.outbox import open_message

TOKEN_LINE = re.compile(r"^Token: (\S+)\r?$", re.MULTILINE)


@dataclass(frozen=True)
class Mail:
    recipient: str
    purpose: str
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        body = self.message.get_body(preferencelist=("plain",))
        assert body is not None
        return str(body.get_content())

    @property
    def token(self) -> str:
        match = TOKEN_LINE.search(self.text)
        assert match, f"no Token line in the {self.purpose} e-mail"
        return match.group(1)


def mails(
    sessions: sessionmaker[Session],
    seal_key: SealKey,
    *,
    recipient: str | None = None,
    purpose: str | None = None,
) -> list[Mail]:
    """Every message still in the outbox (oldest first), filtered by recipient and purpose."""
    query = select(OutboxMessage).order_by(OutboxMessage.created_at)
    if recipient is not None:
        query = query.where(OutboxMessage.recipient == recipient)
    if purpose is not None:
        query = query.where(OutboxMessage.purpose == purpose)
    found = []
    with sessions() as session:
        for row in session.scalars(query):
            raw = open_message(seal_key, row)
            message = email.message_from_bytes(raw, policy=default_policy)
            assert isinstance(message, EmailMessage)
            found.append(Mail(row.recipient, row.purpose, message))
    return found


def last_mail(
    sessions: sessionmaker[Session], seal_key: SealKey, *, recipient: str, purpose: str
) -> Mail:
    found = mails(sessions, seal_key, recipient=recipient, purpose=purpose)
    assert found, f"no {purpose} e-mail to {recipient}"
    return found[-1]

"""Queueing the person's notices (texts in app.services.mail.texts) in the outbox.

Each function queues at most one message in the caller's session (the caller's commit sends it or
not) and returns it, or None when the person has no registered address: a notice is never worth
failing the use case that caused it. To wake the delivery worker, register it with
`app.db.after_commit` as the signing service does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from app.crypto.keys import SealKey
from app.db import Write
from app.models import Credential, OutboxMessage, SigningRequest, User
from app.services.mail.outbox import Outbox
from app.services.mail.texts.alerts import (
    CredentialLockedNotice,
    CredentialRevokedNotice,
    EmailChangedNotice,
    ExpiryNotice,
    PinChangedNotice,
)
from app.services.mail.texts.common import mask_email
from app.services.mail.texts.signing import SigningNotice


@dataclass(frozen=True)
class NoticeContext:
    """How this process writes the person's notices: sealed in the outbox with `seal_key`, their
    times in the person's `zone` (settings.timezone). Built once, by app.runtime."""

    seal_key: SealKey = field(repr=False)
    zone: ZoneInfo


class Notice(Protocol):
    def subject(self) -> str: ...

    def body(self, zone: ZoneInfo) -> str: ...


class TokenNotice(Notice, Protocol):
    """A notice that carries a single-use token, valid until `expires_at`."""

    @property
    def expires_at(self) -> datetime: ...


def queue_notice(
    session: Session,
    mail: NoticeContext,
    *,
    purpose: str,
    recipient: str | None,
    notice: Notice,
    now: datetime,
    not_after: datetime | None = None,
) -> OutboxMessage | None:
    if not recipient:
        return None
    return Outbox(session, mail.seal_key).enqueue(
        purpose=purpose,
        recipient=recipient,
        subject=notice.subject(),
        body=notice.body(mail.zone),
        now=now,
        not_after=not_after,
    )


def queue_token_notice(
    session: Session,
    mail: NoticeContext,
    *,
    purpose: str,
    recipient: str | None,
    notice: TokenNotice,
    now: datetime,
) -> OutboxMessage | None:
    """A token's e-mail is never delivered once the token has expired."""
    return queue_notice(
        session,
        mail,
        purpose=purpose,
        recipient=recipient,
        notice=notice,
        now=now,
        not_after=notice.expires_at,
    )


def queue_signing_notice(
    session: Session,
    mail: NoticeContext,
    user: User,
    request: SigningRequest,
    signer_name: str,
    now: datetime,
) -> OutboxMessage | None:
    """After a signature: tell the person which document was signed, for whom, and when.

    Call it in the signing transaction, once the signature is stored (`now` is its time).
    """
    write = signing_notice(session, mail, user, request, signer_name, now)
    if write is None:
        return None
    session.connection().execute(write.statement, write.params)
    return OutboxMessage(**write.params)


def signing_notice(
    session: Session,
    mail: NoticeContext,
    user: User,
    request: SigningRequest,
    signer_name: str,
    now: datetime,
) -> Write | None:
    """`queue_signing_notice`, its insert returned to be written with the signature's audit
    event (None: the person has no address)."""
    if not user.email:
        return None
    notice = SigningNotice(
        document_name=request.document_name,
        requesting_system=signer_name,
        signed_at=now,
        request_id=request.id,
    )
    return Outbox(session, mail.seal_key).prepare(
        purpose="signing_notice",
        recipient=user.email,
        subject=notice.subject(),
        body=notice.body(mail.zone),
        now=now,
    )


def queue_credential_locked_notice(
    session: Session, mail: NoticeContext, user: User, credential: Credential, now: datetime
) -> OutboxMessage | None:
    """The credential was just locked by wrong PINs: tell the person how to get it back.

    Call it in the transaction that locked it, only when this transaction made the change
    (the conditional UPDATE returned the row), so the person is told once.
    """
    notice = CredentialLockedNotice(name=user.name, locked_at=now, credential_id=credential.id)
    return queue_notice(
        session,
        mail,
        purpose="credential_locked",
        recipient=user.email,
        notice=notice,
        now=now,
    )


def queue_pin_changed_notice(
    session: Session, mail: NoticeContext, user: User, credential: Credential, now: datetime
) -> OutboxMessage | None:
    notice = PinChangedNotice(name=user.name, changed_at=now, credential_id=credential.id)
    return queue_notice(
        session, mail, purpose="pin_changed", recipient=user.email, notice=notice, now=now
    )


def queue_email_changed_notice(
    session: Session, mail: NoticeContext, user: User, old_address: str | None, now: datetime
) -> OutboxMessage | None:
    """To the previous address, after the new one (already on `user`) took effect."""
    assert user.email is not None  # the change just set it
    notice = EmailChangedNotice(
        name=user.name, new_address_masked=mask_email(user.email), changed_at=now
    )
    return queue_notice(
        session, mail, purpose="email_changed", recipient=old_address, notice=notice, now=now
    )


def queue_revoked_notice(
    session: Session, mail: NoticeContext, user: User, credential: Credential, now: datetime
) -> OutboxMessage | None:
    notice = CredentialRevokedNotice(
        name=user.name,
        certificate_serial=credential.certificate_serial or "",
        revoked_at=now,
        reason=credential.revocation_reason or "unspecified",
    )
    return queue_notice(
        session,
        mail,
        purpose="credential_revoked",
        recipient=user.email,
        notice=notice,
        now=now,
    )


def queue_expiry_notice(
    session: Session, mail: NoticeContext, user: User, credential: Credential, now: datetime
) -> OutboxMessage | None:
    assert credential.not_after is not None  # only certificates expire here
    notice = ExpiryNotice(
        name=user.name,
        certificate_serial=credential.certificate_serial or "",
        not_after=credential.not_after,
    )
    return queue_notice(
        session,
        mail,
        purpose="expiry_notice",
        recipient=user.email,
        notice=notice,
        now=now,
        # Worthless once the certificate has expired.
        not_after=credential.not_after,
    )

"""The delivery worker's statements on the outbox: claim what is due, mark what happened.

Core statements on a few columns, not ORM objects: a pass reads a few columns and changes all
its rows in one UPDATE, where ORM objects cost a flush per row (delivery runs twice per signing
flow). Each function runs in the caller's transaction and never commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table, and_, bindparam, func, null, or_, select, update
from sqlalchemy.orm import Session

from app.db import Write, status_constant
from app.models.outbox import OutboxMessage, OutboxStatus
from app.services.mail.courier import Claim

_MESSAGES: Table = OutboxMessage.__table__  # type: ignore[assignment]
# Built once and run on the session's connection: every message sent runs it, and building the
# statement and taking it through the ORM's execution cost more than the database's work.
_MARK_SENT = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("message_id"))
    .values(
        status=OutboxStatus.SENT,
        sent_at=bindparam("sent_at"),
        # NULL in the SQL text, not three parameters (each one costs at every execution).
        sealed_message=null(),
        lease_until=null(),
        last_error=null(),
    )
)


def expire_overdue(session: Session, now: datetime) -> Sequence[str]:
    """Wipe what can no longer be sent in time; returns the ids expired."""
    return session.scalars(
        update(_MESSAGES)
        .where(
            _MESSAGES.c.not_after <= now,
            or_(
                _MESSAGES.c.status == status_constant(OutboxStatus.PENDING),
                and_(
                    _MESSAGES.c.status == status_constant(OutboxStatus.SENDING),
                    _MESSAGES.c.lease_until <= now,
                ),
            ),
        )
        .values(status=OutboxStatus.EXPIRED, sealed_message=None, lease_until=None)
        .returning(_MESSAGES.c.id)
    ).all()


def claim_due(
    session: Session, now: datetime, limit: int, lease_until: datetime, max_attempts: int
) -> tuple[list[Claim], Sequence[MessageFields]]:
    """Lease up to `limit` due messages until `lease_until`; returns (claims, rows failed
    because their last attempt had been used). Run it in a short transaction of its own."""
    rows = session.execute(
        select(
            _MESSAGES.c.id,
            _MESSAGES.c.purpose,
            _MESSAGES.c.request_id,
            _MESSAGES.c.recipient,
            _MESSAGES.c.sealed_message,
            _MESSAGES.c.attempts,
            _MESSAGES.c.not_after,
        )
        .where(
            or_(
                and_(
                    _MESSAGES.c.status == status_constant(OutboxStatus.PENDING),
                    _MESSAGES.c.next_attempt_at <= now,
                ),
                # A worker died holding it.
                and_(
                    _MESSAGES.c.status == status_constant(OutboxStatus.SENDING),
                    _MESSAGES.c.lease_until <= now,
                ),
            ),
            or_(_MESSAGES.c.not_after.is_(None), _MESSAGES.c.not_after > now),
        )
        # Messages with a deadline (OTPs, codes) before those without (notices): under
        # load an OTP must not wait behind the signing notices of earlier flows.
        .order_by(
            _MESSAGES.c.not_after.is_(None),
            _MESSAGES.c.next_attempt_at,
            _MESSAGES.c.created_at,
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    # Its last attempt ended with a dead worker: stop, or a message that crashes
    # workers would be retried for ever.
    exhausted = [row for row in rows if row.attempts >= max_attempts]
    claimed = [row for row in rows if row.attempts < max_attempts]
    if exhausted:
        session.execute(
            update(_MESSAGES)
            .where(_MESSAGES.c.id.in_([row.id for row in exhausted]))
            .values(
                status=OutboxStatus.FAILED,
                sealed_message=None,
                lease_until=None,
                last_error="lease expired after the last attempt",
            )
        )
    if claimed:
        session.execute(
            update(_MESSAGES)
            .where(_MESSAGES.c.id.in_([row.id for row in claimed]))
            .values(
                status=OutboxStatus.SENDING,
                lease_until=lease_until,
                attempts=_MESSAGES.c.attempts + 1,
            )
        )
    claims = [
        Claim(
            id=row.id,
            purpose=row.purpose,
            request_id=row.request_id,
            recipient=row.recipient,
            sealed_message=row.sealed_message,
            attempts=row.attempts + 1,
            not_after=row.not_after,
            lease_until=lease_until,
        )
        for row in claimed
    ]
    return claims, exhausted


def mark_sent(message_id: str, sent_at: datetime) -> Write:
    """The write that marks a message sent, unconditionally: a message sent is sent, whatever
    became of its lease (written with its audit event, app.services.mail.delivery)."""
    return Write(_MARK_SENT, {"message_id": message_id, "sent_at": sent_at})


def settle(session: Session, claim: Claim, values: Mapping[str, Any]) -> bool:
    """Record an outcome only while the claim is still ours (the attempt count fences it);
    whether it was."""
    matched = session.scalars(
        update(_MESSAGES)
        .where(
            _MESSAGES.c.id == claim.id,
            _MESSAGES.c.status == status_constant(OutboxStatus.SENDING),
            _MESSAGES.c.attempts == claim.attempts,
        )
        .values(**values)
        .returning(_MESSAGES.c.id)
    ).all()
    return bool(matched)


class MessageFields(Protocol):
    """A claim, or a row of the claim query: what a delivery log line names."""

    @property
    def id(self) -> str: ...
    @property
    def purpose(self) -> str: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def attempts(self) -> int: ...


def log_fields(claim: MessageFields) -> dict[str, Any]:
    """What a delivery log line names."""
    return {
        "outbox_id": claim.id,
        "purpose": claim.purpose,
        "signing_request_id": claim.request_id,
        "attempts": claim.attempts,
    }


def outbox_stats(session: Session, now: datetime) -> tuple[int, float]:
    """For metrics: (messages pending or being sent, age in seconds of the oldest pending)."""
    depth = session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.status.in_([OutboxStatus.PENDING, OutboxStatus.SENDING]))
    )
    oldest: datetime | None = session.scalar(
        select(func.min(OutboxMessage.created_at)).where(
            OutboxMessage.status == OutboxStatus.PENDING
        )
    )
    age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    return int(depth or 0), age

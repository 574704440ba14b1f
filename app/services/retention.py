"""Retention: the periodic job that deletes short-lived rows once nothing can need them.

Deleted, each kind once it ended `retention_days` ago: signing requests that can never sign
(expired, locked, cancelled, and pending ones past their OTP's and SAD's window, whose status
is only flipped lazily), with their device messages; e-mail sent, failed or expired; device
messages delivered, expired or withdrawn; one-time tokens past their validity; the console's
bulk-move jobs (their per-row reports) created that long ago. Rate windows go as soon as they
no longer count. Never a signature, never a signed request (its signature
references it, and the foreign key would refuse it anyway), never an audit event.

Each batch is its own short transaction: at most `batch` rows taken oldest first from one
index range, `(status, age)` for one status or `(age)` (the indexes of migrations 0001-0005 and
0007), so that a batch reads about as many index entries as it deletes, however long the history;
then deleted by primary key with their conditions checked again. A pass stops after
`max_batches` a range and leaves the rest to the next one, so its cost is bounded. The job
runner's lease runs one pass at a time across workers; two passes at once would only find
fewer rows to delete. A pass that deleted anything records one audit event with the counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select, true, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker
from sqlalchemy.sql.elements import SQLCoreOperations

from app.db import unit_of_work
from app.models import OneTimeToken, OutboxMessage, OutboxStatus, RateWindow, RequestStatus
from app.models import SigningRequest as Request
from app.models.device import DeviceMessage, DeviceMessageStatus
from app.models.web import ConsoleEnrolmentJob
from app.services.audit.log import AuditLog

PURGE_BATCH = 1000
PURGE_MAX_BATCHES = 100


def _device_messages_of(session: Session, request_ids: list[Any]) -> int:
    # An OTP message for a device is the only row that references a signing request. It ends
    # with the request's window, so it normally went in its own batch already (and the device
    # leftovers job marked it expired): this catches one still pending.
    return len(
        session.execute(
            delete(DeviceMessage)
            .where(DeviceMessage.request_id.in_(request_ids))
            .returning(DeviceMessage.id)
            .execution_options(synchronize_session=False)
        ).all()
    )


@dataclass(frozen=True)
class _Kind:
    name: str
    primary_key: tuple[InstrumentedAttribute[Any], ...]
    # Rows whose `age` is before the limit (the cutoff, or now for `by_now`) go...
    age: SQLCoreOperations[datetime]
    # ...if their `status` is one of `statuses` (each its own range of the (status, age) index)
    status: SQLCoreOperations[str] | None = None
    statuses: tuple[str, ...] = ()
    # ...and this holds, given the cutoff.
    also: Callable[[datetime], ColumnElement[bool]] | None = None
    by_now: bool = False
    # The kind of the rows that reference a batch, and what deletes them first (given the
    # batch's keys; returns how many).
    dependents: tuple[str, Callable[[Session, list[Any]], int]] | None = None

    def ranges(self, cutoff: datetime, now: datetime) -> list[ColumnElement[bool]]:
        old = and_(
            self.age < (now if self.by_now else cutoff), self.also(cutoff) if self.also else true()
        )
        if self.status is None:
            return [old]
        return [and_(self.status == status, old) for status in self.statuses]


KINDS = (
    _Kind(
        "device_messages",
        (DeviceMessage.id,),
        DeviceMessage.expires_at,
        DeviceMessage.status,
        (
            DeviceMessageStatus.DELIVERED,
            DeviceMessageStatus.EXPIRED,
            DeviceMessageStatus.WITHDRAWN,
        ),
    ),
    _Kind(
        "signing_requests",
        (Request.id,),
        Request.expires_at,
        Request.status,
        # Never `signed`: the one status whose row a signature references.
        (
            RequestStatus.EXPIRED,
            RequestStatus.LOCKED,
            RequestStatus.CANCELLED,
            RequestStatus.PENDING,
        ),
        # A SAD may outlive the OTP's window (by its 60 s at most).
        also=lambda cutoff: or_(Request.sad_expires_at.is_(None), Request.sad_expires_at < cutoff),
        dependents=("device_messages", _device_messages_of),
    ),
    _Kind(
        "outbox_messages",
        (OutboxMessage.id,),
        OutboxMessage.next_attempt_at,
        OutboxMessage.status,
        (OutboxStatus.SENT, OutboxStatus.FAILED, OutboxStatus.EXPIRED),
    ),
    _Kind("one_time_tokens", (OneTimeToken.id,), OneTimeToken.expires_at),
    # Long finished by then (a running one stops being advanced within minutes).
    _Kind("console_enrolment_jobs", (ConsoleEnrolmentJob.id,), ConsoleEnrolmentJob.created_at),
    _Kind(
        "rate_windows",
        (RateWindow.key, RateWindow.bucket_started_at, RateWindow.shard),
        RateWindow.expires_at,
        by_now=True,
    ),
)


class RetentionPurge:
    """One pass of the retention job (see the module's docstring)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        audit: Callable[[Session], AuditLog],
        retention_days: int,
        *,
        batch: int = PURGE_BATCH,
        max_batches: int = PURGE_MAX_BATCHES,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._retention = timedelta(days=retention_days)
        self._batch = batch
        self._max_batches = max_batches

    def __call__(self, now: datetime) -> str:
        cutoff = now - self._retention
        counts = dict.fromkeys((kind.name for kind in KINDS), 0)
        complete = True
        for kind in KINDS:
            for where in kind.ranges(cutoff, now):
                complete = self._purge(kind, where, counts) and complete
        if any(counts.values()):
            with unit_of_work(self._sessions) as session:
                self._audit(session).record(
                    now=now,
                    action="retention.purged",
                    actor="jobs",
                    outcome="complete" if complete else "more_left",
                    details={**counts, "retention_days": self._retention.days},
                )
        summary = ", ".join(f"{count} {name}" for name, count in counts.items())
        return f"retention: deleted {summary}" + ("" if complete else " (more left)")

    def _purge(self, kind: _Kind, where: ColumnElement[bool], counts: dict[str, int]) -> bool:
        """Delete one range in batches, adding to `counts`; returns whether none is left."""
        for _ in range(self._max_batches):
            with unit_of_work(self._sessions) as session:
                found = self._delete_batch(session, kind, where, counts)
            if found < self._batch:
                return True
        return False

    def _delete_batch(
        self, session: Session, kind: _Kind, where: ColumnElement[bool], counts: dict[str, int]
    ) -> int:
        """At most `batch` rows, oldest first, then deleted by primary key with the conditions
        checked again; returns how many were found."""
        single = len(kind.primary_key) == 1
        oldest = select(*kind.primary_key).where(where).order_by(kind.age).limit(self._batch)
        found = [row[0] if single else tuple(row) for row in session.execute(oldest)]
        if not found:
            return 0
        if kind.dependents is not None:
            name, delete_dependents = kind.dependents
            counts[name] += delete_dependents(session, found)
        key = kind.primary_key[0] if single else tuple_(*kind.primary_key)
        removed = session.execute(
            delete(kind.primary_key[0].class_)
            .where(key.in_(found), where)
            .returning(kind.primary_key[0])
            .execution_options(synchronize_session=False)
        ).all()
        counts[kind.name] += len(removed)
        return len(found)

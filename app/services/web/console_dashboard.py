"""The console's dashboard: the last hour in 5-minute buckets (signatures made, failed OTP + PIN
checks, credentials locked by wrong PINs) and the e-mail backlog.

The counts come from the audit trail, the one record of every such event, read over the last
hour only (its window found through the id index: app.services.web.audit_window). An agency
administrator sees the events of their agency's people, matched through the event's target
(a signing request or a credential); the e-mail backlog is the whole system's, for JDN."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.models import AuditEvent, Credential, OutboxMessage, SigningRequest, User
from app.models.outbox import OutboxStatus
from app.services.web.audit_window import first_id_from

BUCKET = timedelta(minutes=5)
BUCKETS = 12  # an hour
# series -> the audit action counted
SERIES: dict[str, str] = {
    "signatures": "signature.created",
    "failed_checks": "otp.check.rejected",
    "locks": "credential.locked",
}
_BY_ACTION = {action: name for name, action in SERIES.items()}
UNDELIVERED = ("mail.failed", "mail.expired")  # app.services.mail.delivery


@dataclass(frozen=True)
class Bucket:
    start: datetime
    counts: dict[str, int]  # series -> events in [start, start + BUCKET)


@dataclass(frozen=True)
class EmailBacklog:
    waiting: int  # pending or being sent
    oldest_since: datetime | None  # when the longest-waiting one was queued
    undelivered: int  # given up in the hour shown (failed, or expired before it could go)


@dataclass(frozen=True)
class Dashboard:
    start: datetime
    end: datetime  # the end of the current (partial) bucket
    buckets: list[Bucket]
    totals: dict[str, int]
    backlog: EmailBacklog | None  # None for an agency administrator


def window_of(now: datetime) -> tuple[datetime, datetime]:
    """The hour shown: 12 buckets aligned on 5 minutes, the last one holding `now`."""
    seconds = int(BUCKET.total_seconds())
    epoch = int(now.timestamp())
    end = datetime.fromtimestamp(epoch - epoch % seconds, now.tzinfo) + BUCKET
    return end - BUCKET * BUCKETS, end


class ConsoleDashboard:
    def __init__(self, session: Session) -> None:
        self.session = session

    def last_hour(self, now: datetime, *, agency: str | None, with_backlog: bool) -> Dashboard:
        """The hour up to `now`: every agency's (`agency` None) or one agency's people's."""
        start, end = window_of(now)
        moments = self._events(start, now, agency)
        buckets = [
            Bucket(start + BUCKET * index, dict.fromkeys(SERIES, 0)) for index in range(BUCKETS)
        ]
        for action, occurred_at in moments:
            index = int((occurred_at - start) / BUCKET)
            if 0 <= index < BUCKETS:
                buckets[index].counts[_BY_ACTION[action]] += 1
        totals = {name: sum(bucket.counts[name] for bucket in buckets) for name in SERIES}
        backlog = self._backlog(start, now) if with_backlog else None
        return Dashboard(start, end, buckets, totals, backlog)

    def _events(
        self, start: datetime, now: datetime, agency: str | None
    ) -> Sequence[tuple[str, datetime]]:
        first = first_id_from(self.session, start)
        if first is None:
            return []
        query = select(AuditEvent.action, AuditEvent.occurred_at).where(
            AuditEvent.id >= first,
            AuditEvent.action.in_(SERIES.values()),
            AuditEvent.occurred_at >= start,
            AuditEvent.occurred_at <= now,
        )
        if agency is not None:
            # A signature's and a check's target is its signing request; a lock's, the
            # credential: either leads to the person, whose agency scopes the event.
            query = (
                query.outerjoin(SigningRequest, SigningRequest.id == AuditEvent.target_id)
                .outerjoin(Credential, Credential.id == AuditEvent.target_id)
                .join(
                    User,
                    or_(User.id == SigningRequest.user_id, User.id == Credential.user_id),
                )
                .where(User.agency == agency)
            )
        return [(row.action, row.occurred_at) for row in self.session.execute(query)]

    def _backlog(self, start: datetime, now: datetime) -> EmailBacklog:
        waiting, oldest = self.session.execute(
            select(func.count(), func.min(OutboxMessage.created_at)).where(
                OutboxMessage.status.in_([OutboxStatus.PENDING, OutboxStatus.SENDING])
            )
        ).one()
        undelivered = 0
        first = first_id_from(self.session, start)
        if first is not None:
            undelivered = (
                self.session.scalar(
                    select(func.count()).where(
                        AuditEvent.id >= first,
                        AuditEvent.action.in_(UNDELIVERED),
                        AuditEvent.occurred_at >= start,
                        AuditEvent.occurred_at <= now,
                    )
                )
                or 0
            )
        return EmailBacklog(int(waiting), oldest, int(undelivered))

"""Finding a time window of the audit trail by its primary key.

`audit_events` has no index on `occurred_at` (and no schema change is wanted for a page), but
ids grow in insertion order and each event's time is read just before it is inserted, so time
grows with the id, out of order by at most one transaction's length. A bisection over the id
index finds where a moment starts in O(log n) index lookups; a margin covers the disorder, and
the callers still filter on `occurred_at` exactly."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import AuditEvent

# Far longer than any transaction that records an event.
DISORDER_MARGIN = timedelta(minutes=5)


def first_id_from(session: Session, moment: datetime) -> int | None:
    """An id below which no event is at or after `moment` (less the margin), or None when no
    event is that recent."""
    target = moment - DISORDER_MARGIN
    low, high = session.execute(select(func.min(AuditEvent.id), func.max(AuditEvent.id))).one()
    if low is None or high is None:
        return None
    answer: int | None = None
    while low <= high:
        middle = (low + high) // 2
        probe = session.execute(
            select(AuditEvent.id, AuditEvent.occurred_at)
            .where(AuditEvent.id >= middle)
            .order_by(AuditEvent.id)
            .limit(1)
        ).first()
        if probe is None:  # only a gap above `middle`
            high = middle - 1
        elif probe.occurred_at >= target:
            answer, high = probe.id, middle - 1
        else:
            low = probe.id + 1
    return answer

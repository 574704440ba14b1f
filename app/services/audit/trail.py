"""Reading the audit trail: filtered by person, action and time, a page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto.keys import MacKey
from app.errors import ValidationFailed
from app.models import AuditEvent
from app.services.audit.event import subject_ref
from app.validation import normalise_mykad

MAX_QUERY = 1000
# Below MAX_QUERY: one more event is read to know whether another page follows.
MAX_PAGE = 500


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    # The cursor of the next page (pass it as `after`), or None on the last page.
    next_after: int | None


class AuditTrailService:
    def __init__(self, session: Session, subject_key: MacKey) -> None:
        self.session = session
        self._subject_key = subject_key

    def page(
        self,
        *,
        mykad: str | None,
        action: str | None,
        since: datetime | None,
        after: int | None,
        limit: int,
    ) -> AuditPage:
        """Events in the order they were recorded. The MyKad is looked up through its keyed
        digest: the trail never holds the number itself."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed(f"limit must be 1 to {MAX_PAGE}", "/limit")
        ref = None
        if mykad is not None:
            try:
                ref = subject_ref(self._subject_key, normalise_mykad(mykad))
            except ValueError as exc:
                raise ValidationFailed(str(exc), "/mykad") from None
        if since is not None and since.tzinfo is None:
            raise ValidationFailed("since must carry a time zone (RFC 3339)", "/since")
        events = query_events(
            self.session,
            subject_ref=ref,
            action=action,
            since=since,
            limit=limit + 1,
            after_id=after,
        )
        if len(events) > limit:
            return AuditPage(events[:limit], events[limit - 1].id)
        return AuditPage(events, None)


def query_events(
    session: Session,
    *,
    subject_ref: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> list[AuditEvent]:
    """A page of events in id order; pass the last id seen as `after_id` for the next page."""
    if not 1 <= limit <= MAX_QUERY:
        raise ValueError(f"limit must be 1 to {MAX_QUERY}")
    query = select(AuditEvent).order_by(AuditEvent.id).limit(limit)
    if subject_ref is not None:
        query = query.where(AuditEvent.subject_ref == subject_ref)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    if after_id is not None:
        query = query.where(AuditEvent.id > after_id)
    return list(session.scalars(query))

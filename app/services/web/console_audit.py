"""The console's audit trail (JDN only, as GET /v1/audit-events): events newest first, filtered
by person, action and a time range, a page at a time; and the chain verification that
`python -m app audit verify` runs.

The verification reads every event once and recomputes its MAC: its cost grows with the whole
trail (see `ConsoleAuditTrail.verify`), so the page runs it only when asked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.crypto.keys import MacKey
from app.models import AuditEvent
from app.services.audit.event import subject_ref
from app.services.audit.log import AuditLog
from app.services.audit.verification import AuditVerification, verify_audit_trail
from app.services.web.audit_window import DISORDER_MARGIN, first_id_from

PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditFilter:
    """What the administrator asked for; each None is "any". `mykad` is already normalised."""

    mykad: str | None = None
    action: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


@dataclass(frozen=True)
class AuditEventsPage:
    events: list[AuditEvent]
    # The cursor of the next (older) page: pass it as `before`; None on the last page.
    older_than: int | None


class ConsoleAuditTrail:
    def __init__(
        self, session: Session, audit: AuditLog, subject_key: MacKey, mac_key: MacKey
    ) -> None:
        self.session = session
        self.audit = audit
        self._subject_key = subject_key
        self._mac_key = mac_key

    def page(
        self, wanted: AuditFilter, *, before: int | None = None, size: int = PAGE_SIZE
    ) -> AuditEventsPage:
        """The newest events matching `wanted` with an id below `before`. The MyKad is found
        through its keyed digest (the trail never holds the number); the id index serves the
        order and, bisected, the time range (app.services.web.audit_window); the action and
        subject indexes the other filters."""
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(size + 1)
        if wanted.mykad is not None:
            query = query.where(
                AuditEvent.subject_ref == subject_ref(self._subject_key, wanted.mykad)
            )
        if wanted.action is not None:
            query = query.where(AuditEvent.action == wanted.action)
        if wanted.since is not None:
            query = query.where(AuditEvent.occurred_at >= wanted.since)
            first = first_id_from(self.session, wanted.since)
            if first is None:
                return AuditEventsPage([], None)
            query = query.where(AuditEvent.id >= first)
        if wanted.until is not None:
            query = query.where(AuditEvent.occurred_at < wanted.until)
            # Every event from this id on is at or after `until`, whatever their disorder.
            beyond = first_id_from(self.session, wanted.until + 2 * DISORDER_MARGIN)
            if beyond is not None:
                query = query.where(AuditEvent.id < beyond)
        if before is not None:
            query = query.where(AuditEvent.id < before)
        events = list(self.session.scalars(query))
        if len(events) > size:
            return AuditEventsPage(events[:size], events[size - 1].id)
        return AuditEventsPage(events, None)

    def verify(self, actor: str, now: datetime) -> AuditVerification:
        """Every chain recomputed, the first break named (the CLI's `audit verify` without
        checkpoint files), and who asked recorded in the trail after it. One pass over the
        whole table, one HMAC per event, streamed in batches: linear in the trail's size. On
        SQLite its transaction holds the write lock while it runs, so writers wait for it."""
        result = verify_audit_trail(self.session, self._mac_key)
        self.audit.record(
            now=now,
            action="audit.verified",
            actor=actor,
            outcome="intact" if result.ok else "broken",
            details={"checked": result.checked, "breaks": result.breaks},
        )
        return result

"""The console's audit trail and dashboard services on a real database, with the clock
injected: filters, paging newest first, the chain verification naming the first broken event;
the last hour in 5-minute buckets, all agencies for JDN and one agency for its administrator;
the time window found by bisecting the id index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from app.clock import FrozenClock
from app.db import unit_of_work
from app.models import AuditEvent
from app.runtime import Runtime
from app.services.clients import ClientService
from app.services.signing.issue import NewSigningRequest
from app.services.web.audit_window import first_id_from
from app.services.web.console_audit import AuditFilter
from app.services.web.console_dashboard import window_of
from app.units import Services
from tests.factories import Factory, Person
from tests.helpers import document_hash

START = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # the clock fixture's


def record(runtime: Runtime, at: datetime, action: str, target: str | None, mykad: str) -> None:
    with unit_of_work(runtime.sessions) as session:
        runtime.audit_log(session).record(
            now=at, action=action, actor="test", mykad=mykad, target_id=target
        )


def request_of(runtime: Runtime, factory: Factory, person: Person, key: str) -> str:
    with unit_of_work(runtime.sessions) as session:
        caller = ClientService(session, runtime.audit_log(session)).authenticate(key)
        return (
            Services(runtime, session)
            .signing.request_signature(
                caller,
                NewSigningRequest(
                    mykad=person.mykad,
                    document_hash=document_hash(person.mykad),
                    hash_algorithm="sha256",
                    document_name="PV",
                    channel="email",
                    signature_format="cms",
                ),
                factory.now(),
            )
            .id
        )


def test_the_last_hour_in_buckets_for_jdn_and_for_one_agency(
    runtime: Runtime, factory: Factory, clock: FrozenClock
) -> None:
    jdn_person = factory.person(agency="JDN")
    kkm_person = factory.person(agency="KKM")
    key = factory.client("igfmas", "signer")
    jdn_request = request_of(runtime, factory, jdn_person, key)
    kkm_request = request_of(runtime, factory, kkm_person, key)
    hour = START + timedelta(hours=1)  # every event after the setup's, in time order
    events = [
        (hour - timedelta(minutes=1), "signature.created", jdn_request, jdn_person),  # before
        (hour + timedelta(minutes=6), "signature.created", jdn_request, jdn_person),
        (hour + timedelta(minutes=30), "credential.locked", kkm_person.credential_id, kkm_person),
        (hour + timedelta(minutes=40), "mail.failed", None, kkm_person),
        (hour + timedelta(minutes=59), "signature.created", kkm_request, kkm_person),
        (hour + timedelta(minutes=61), "otp.check.rejected", jdn_request, jdn_person),
        (hour + timedelta(minutes=62), "otp.check.rejected", kkm_request, kkm_person),
        (hour + timedelta(minutes=62), "user.created", None, kkm_person),  # not a series
        (hour + timedelta(minutes=63), "signature.created", kkm_request, kkm_person),  # later
    ]
    for at, action, target, person in events:
        record(runtime, at, action, target, person.mykad)
    now = hour + timedelta(minutes=62, seconds=30)
    clock.advance((now - clock.now()).total_seconds())

    with unit_of_work(runtime.sessions) as session:
        dashboard = Services(runtime, session).console_dashboard
        every = dashboard.last_hour(now, agency=None, with_backlog=True)
        kkm = dashboard.last_hour(now, agency="KKM", with_backlog=False)

    assert (every.start, every.end) == (hour + timedelta(minutes=5), hour + timedelta(minutes=65))
    assert len(every.buckets) == 12
    assert every.totals == {"signatures": 2, "failed_checks": 2, "locks": 1}
    counts = [bucket.counts for bucket in every.buckets]
    assert counts[0] == {"signatures": 1, "failed_checks": 0, "locks": 0}  # 10:11 in [10:05, 10:10)
    assert counts[5]["locks"] == 1 and counts[10]["signatures"] == 1
    assert counts[11] == {"signatures": 0, "failed_checks": 2, "locks": 0}
    assert every.backlog is not None
    assert every.backlog.waiting == 2  # the two OTP e-mails, never sent here
    assert every.backlog.oldest_since == START and every.backlog.undelivered == 1

    assert kkm.totals == {"signatures": 1, "failed_checks": 1, "locks": 1}
    assert kkm.backlog is None


def test_the_window_is_aligned_on_five_minutes() -> None:
    now = datetime(2026, 11, 27, 10, 7, 59, tzinfo=UTC)
    assert window_of(now) == (
        datetime(2026, 11, 27, 9, 10, tzinfo=UTC),
        datetime(2026, 11, 27, 10, 10, tzinfo=UTC),
    )


def test_the_window_is_found_by_bisecting_the_ids(runtime: Runtime, factory: Factory) -> None:
    person = factory.person()
    base = START + timedelta(days=1)
    for minute in range(0, 300, 7):
        record(runtime, base + timedelta(minutes=minute), "user.created", None, person.mykad)
    with runtime.sessions() as session:
        for minute in (0, 33, 100, 299):
            first = first_id_from(session, base + timedelta(minutes=minute))
            assert first is not None
            at = session.get(AuditEvent, first)
            assert at is not None
            # The first event at or after the moment less the 5-minute margin.
            earlier = session.get(AuditEvent, first - 1)
            moment = base + timedelta(minutes=minute - 5)
            assert at.occurred_at >= moment
            assert earlier is None or earlier.occurred_at < moment
        assert first_id_from(session, base + timedelta(minutes=400)) is None


def test_the_audit_trail_filtered_paged_and_verified(runtime: Runtime, factory: Factory) -> None:
    one, other = factory.person(), factory.person()
    base = START + timedelta(days=2)
    for index in range(7):
        record(runtime, base + timedelta(minutes=index), "credential.unlocked", None, one.mykad)
    record(runtime, base + timedelta(minutes=8), "credential.unlocked", None, other.mykad)

    with unit_of_work(runtime.sessions) as session:
        trail = Services(runtime, session).console_audit
        mine = AuditFilter(mykad=one.mykad, action="credential.unlocked")
        first = trail.page(mine, size=3)
        second = trail.page(mine, before=first.older_than, size=3)
        third = trail.page(mine, before=second.older_than, size=3)
        ranged = trail.page(
            AuditFilter(
                action="credential.unlocked",
                since=base + timedelta(minutes=2),
                until=base + timedelta(minutes=5),
            )
        )
        intact = trail.verify("console:test", base + timedelta(minutes=10))

    times = [event.occurred_at for event in first.events + second.events + third.events]
    assert times == [base + timedelta(minutes=m) for m in range(6, -1, -1)]  # newest first
    assert third.older_than is None
    assert {event.mykad_masked for event in first.events} == {"********" + one.mykad[-4:]}
    assert [event.occurred_at for event in ranged.events] == [
        base + timedelta(minutes=m) for m in (4, 3, 2)
    ]
    assert intact.ok and intact.checked > 8

    tampered = first.events[1].id
    with unit_of_work(runtime.sessions) as session:
        session.execute(update(AuditEvent).where(AuditEvent.id == tampered).values(outcome="x"))
    with unit_of_work(runtime.sessions) as session:
        broken = Services(runtime, session).console_audit.verify(
            "console:test", base + timedelta(minutes=11)
        )
    assert not broken.ok and broken.first_broken is not None
    assert broken.first_broken.event_id == tampered
    with runtime.sessions() as session:
        asked = session.scalars(
            select(AuditEvent.outcome)
            .where(AuditEvent.action == "audit.verified")
            .order_by(AuditEvent.id)
        ).all()
    assert asked == ["intact", "broken"]

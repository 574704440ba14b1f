"""The console's bulk-move jobs on a real database, with the clock injected: the progress and
report as another process sees them (a second engine), never ahead of what was committed; a
job whose process stopped found interrupted, with its rows done so far; the same file uploaded
again is safe (nobody gets a second application or e-mail)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.db import make_engine, make_sessionmaker, unit_of_work
from app.models import OutboxMessage, RoamingApplication
from app.models.web import EnrolmentJobStatus
from app.runtime import Runtime
from app.services.web.console_enrolments import STALE_AFTER, EnrolmentJobStopped
from app.units import Services
from tests.factories import Factory, Person

T = TypeVar("T")
ACTOR = "console:test"


class Boom(Exception):
    pass


@pytest.fixture
def elsewhere(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions of another process: its own engine, its own connections."""
    engine = make_engine(database_url, pool_size=2)
    yield make_sessionmaker(engine)
    engine.dispose()


def unit(runtime: Runtime, work: Callable[[Services], T]) -> T:
    with unit_of_work(runtime.sessions) as session:
        return work(Services(runtime, session))


def seen_from(
    runtime: Runtime, sessions: sessionmaker[Session], work: Callable[[Services], T]
) -> T:
    with unit_of_work(sessions) as session:
        return work(Services(runtime, session))


def movers(factory: Factory, count: int) -> list[Person]:
    return [factory.person(email=f"mover{n}@jdn.gov.my", roaming=False) for n in range(count)]


def report_rows(
    runtime: Runtime, sessions: sessionmaker[Session], job_id: str, owner: str, now: datetime
) -> list[list[str]]:
    report = seen_from(
        runtime, sessions, lambda s: s.console_enrolments.report_csv(job_id, owner, now)
    )
    assert report is not None
    return list(csv.reader(io.StringIO(report)))


def test_another_process_sees_the_committed_progress_and_the_report(
    runtime: Runtime, factory: Factory, clock: FrozenClock, elsewhere: sessionmaker[Session]
) -> None:
    admin, other = factory.person(), factory.person()
    people = movers(factory, 3)
    upload = [p.mykad for p in people] + ["850101145555", "12\x0034"]
    now = clock.now()
    job_id = unit(runtime, lambda s: s.console_enrolments.start(admin.user_id, ACTOR, 5, now))

    def progress() -> tuple[int, EnrolmentJobStatus, dict[str, int]]:
        job = seen_from(
            runtime, elsewhere, lambda s: s.console_enrolments.find(job_id, admin.user_id, now)
        )
        assert job is not None
        return job.done, job.status, job.counts

    assert progress() == (0, EnrolmentJobStatus.RUNNING, {})
    unit(runtime, lambda s: s.console_enrolments.enrol_batch(job_id, ACTOR, upload[:2], now))
    assert progress() == (2, EnrolmentJobStatus.RUNNING, {"enrolled": 2})

    # A batch that fails before its commit leaves neither its enrolments nor its progress.
    def failing(services: Services) -> None:
        services.console_enrolments.enrol_batch(job_id, ACTOR, upload[2:4], now)
        raise Boom

    with pytest.raises(Boom):
        unit(runtime, failing)
    assert progress() == (2, EnrolmentJobStatus.RUNNING, {"enrolled": 2})
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(RoamingApplication)) == 2

    clock.advance(seconds=30)
    later = clock.now()
    unit(runtime, lambda s: s.console_enrolments.enrol_batch(job_id, ACTOR, upload[2:], later))
    job = seen_from(
        runtime, elsewhere, lambda s: s.console_enrolments.find(job_id, admin.user_id, later)
    )
    assert job is not None
    assert (job.done, job.total, job.status, job.finished_at) == (
        5,
        5,
        EnrolmentJobStatus.FINISHED,
        later,
    )
    assert job.counts == {"enrolled": 3, "invalid_mykad": 1, "unknown_person": 1}
    rows = report_rows(runtime, elsewhere, job_id, admin.user_id, later)
    assert rows[0] == ["mykad", "outcome", "application_id"]
    assert [row[:2] for row in rows[1:]] == [
        [people[0].mykad, "enrolled"],
        [people[1].mykad, "enrolled"],
        [people[2].mykad, "enrolled"],
        ["850101145555", "unknown_person"],
        ["12\ufffd34", "invalid_mykad"],  # PostgreSQL keeps no NUL in text
    ]
    assert all(len(row[2]) == 36 for row in rows[1:4])
    # Another administrator's job is nobody's to them.
    for look in ("find", "report_csv"):
        assert (
            seen_from(
                runtime,
                elsewhere,
                lambda s, look=look: getattr(s.console_enrolments, look)(
                    job_id, other.user_id, later
                ),
            )
            is None
        )
    # A finished job takes no more batches.
    with pytest.raises(EnrolmentJobStopped):
        unit(runtime, lambda s: s.console_enrolments.enrol_batch(job_id, ACTOR, upload, later))


def test_a_job_whose_process_stopped_is_interrupted_and_the_same_file_again_is_safe(
    runtime: Runtime, factory: Factory, clock: FrozenClock, elsewhere: sessionmaker[Session]
) -> None:
    admin = factory.person()
    people = movers(factory, 3)
    upload = [p.mykad for p in people]
    start = clock.now()
    job_id = unit(runtime, lambda s: s.console_enrolments.start(admin.user_id, ACTOR, 3, start))
    clock.advance(seconds=1)
    first = clock.now()
    unit(runtime, lambda s: s.console_enrolments.enrol_batch(job_id, ACTOR, upload[:2], first))

    # ...and then its process dies. Until STALE_AFTER has passed, it may only be slow.
    def look() -> tuple[EnrolmentJobStatus, int, object]:
        now = clock.now()
        job = seen_from(
            runtime, elsewhere, lambda s: s.console_enrolments.find(job_id, admin.user_id, now)
        )
        assert job is not None
        return job.status, job.done, job.finished_at

    clock.advance((STALE_AFTER - (clock.now() - first)).total_seconds() - 1)
    assert look() == (EnrolmentJobStatus.RUNNING, 2, None)
    clock.advance(seconds=1)
    assert look() == (EnrolmentJobStatus.INTERRUPTED, 2, first)  # stopped at its last batch
    now = clock.now()
    rows = report_rows(runtime, elsewhere, job_id, admin.user_id, now)
    assert [row[:2] for row in rows[1:]] == [[p.mykad, "enrolled"] for p in people[:2]]
    first_applications = [row[2] for row in rows[1:]]
    # A batch of the old process that turns up after all is refused, and rolled back whole.
    with pytest.raises(EnrolmentJobStopped):
        unit(runtime, lambda s: s.console_enrolments.enrol_batch(job_id, ACTOR, upload[2:], now))
    assert look()[:2] == (EnrolmentJobStatus.INTERRUPTED, 2)

    # The administrator uploads the same file again.
    again = unit(runtime, lambda s: s.console_enrolments.start(admin.user_id, ACTOR, 3, now))
    unit(runtime, lambda s: s.console_enrolments.enrol_batch(again, ACTOR, upload, now))
    rows = report_rows(runtime, elsewhere, again, admin.user_id, now)
    assert [row[:3] for row in rows[1:3]] == [
        [p.mykad, "already_enrolled", application]
        for p, application in zip(people[:2], first_applications, strict=True)
    ]
    assert rows[3][:2] == [people[2].mykad, "enrolled"]
    with runtime.sessions() as session:
        per_person = session.execute(
            select(RoamingApplication.user_id, func.count()).group_by(RoamingApplication.user_id)
        ).all()
        assert sorted(count for _user, count in per_person) == [1, 1, 1]
        # One verification e-mail each, never a second.
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 3

"""The periodic jobs on a real database: one run per due time across runners, notices once."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select, update

from app.clock import FrozenClock
from app.db import unit_of_work
from app.models import Credential, JobRun
from app.runtime import Runtime
from app.services.lifecycle.jobs import Job, JobRunner, job_runner
from tests.factories import Factory
from tests.mailbox import mails


def expiry_mails(runtime: Runtime) -> list[str]:
    found = mails(runtime.sessions, runtime.keys.outbox_seal, purpose="expiry_notice")
    return [m.recipient for m in found]


def test_each_person_is_told_once_within_thirty_days_of_expiry(
    runtime: Runtime, factory: Factory, clock: FrozenClock
) -> None:
    soon = factory.person(email="soon@jdn.gov.my")
    factory.person(email="later@jdn.gov.my")
    silent = factory.person(email=None)
    runner = job_runner(runtime)
    assert {r.name: r.ran for r in runner.run_due()} == {
        "expiry_notices": True,
        "device_leftovers": True,
        "audit_checkpoint": True,
        "retention": True,
    }
    assert expiry_mails(runtime) == []  # 730 days left for everyone

    # Shorten one certificate's validity to 30 days, another's (no e-mail) to 10.
    with unit_of_work(runtime.sessions) as session:
        now = clock.now()
        for person, days in ((soon, 30), (silent, 10)):
            session.execute(
                update(Credential)
                .where(Credential.id == person.credential_id)
                .values(not_after=now + timedelta(days=days))
            )
    clock.advance(3600)
    reports = runner.run_due()
    assert reports[0].outcome == "expiry notices: 1 queued, 1 without an e-mail address"
    notice = mails(runtime.sessions, runtime.keys.outbox_seal, purpose="expiry_notice")[0]
    assert notice.recipient == "soon@jdn.gov.my"
    assert "expires soon" in notice.subject and "Token:" not in notice.text
    clock.advance(3600)
    runner.run_due()
    assert expiry_mails(runtime) == ["soon@jdn.gov.my"]  # once per certificate
    with runtime.sessions() as session:
        marked = session.scalars(
            select(Credential.id).where(Credential.expiry_notice_sent_at.is_not(None))
        ).all()
    assert sorted(marked) == sorted([soon.credential_id, silent.credential_id])


def test_a_renewed_credential_gets_no_expiry_notice(
    runtime: Runtime, factory: Factory, clock: FrozenClock
) -> None:
    person = factory.person()
    assert person.credential_id is not None
    with unit_of_work(runtime.sessions) as session:
        session.execute(
            update(Credential)
            .where(Credential.id == person.credential_id)
            .values(not_after=clock.now() + timedelta(days=20))
        )
    from app.services.lifecycle.credential_lifecycle import CredentialLifecycle
    from tests.factories import FACTORY_CALLER

    with unit_of_work(runtime.sessions) as session:
        CredentialLifecycle(factory.lifecycle(session)).renew(
            FACTORY_CALLER, person.credential_id, None, clock.now()
        )
    job_runner(runtime).run_due()
    assert expiry_mails(runtime) == []


def test_a_due_job_runs_in_one_runner_only(runtime: Runtime, clock: FrozenClock) -> None:
    runs: list[str] = []
    gate = threading.Event()

    def slow(_now: object) -> str:
        runs.append("run")
        gate.wait(5)
        return "done"

    jobs = [Job("probe", timedelta(minutes=10), slow)]
    first = JobRunner(runtime.sessions, clock, jobs, lease=timedelta(minutes=5), owner="a")
    second = JobRunner(runtime.sessions, clock, jobs, lease=timedelta(minutes=5), owner="b")
    thread = threading.Thread(target=first.run_due)
    thread.start()
    try:
        for _ in range(500):
            if runs:
                break
            threading.Event().wait(0.01)
        assert second.run_due()[0].ran is False  # leased by the first, still running
    finally:
        gate.set()
        thread.join(10)
    assert runs == ["run"]
    assert second.run_due()[0].ran is False  # done, and not due again for 10 minutes
    clock.advance(600)
    assert second.run_due()[0].ran is True
    with runtime.sessions() as session:
        row = session.get(JobRun, "probe")
        assert row is not None and row.runs == 2 and row.lease_owner is None
        assert row.next_due_at == clock.now() + timedelta(minutes=10)


def test_a_lease_left_by_a_dead_runner_is_taken_over(runtime: Runtime, clock: FrozenClock) -> None:
    jobs = [Job("probe", timedelta(minutes=10), lambda _now: "done")]
    runner = JobRunner(runtime.sessions, clock, jobs, lease=timedelta(minutes=5), owner="b")
    runner.run_due()
    clock.advance(600)
    with unit_of_work(runtime.sessions) as session:  # a runner died holding the lease
        session.execute(
            update(JobRun).values(
                lease_owner="dead", lease_until=clock.now() + timedelta(minutes=5)
            )
        )
    assert runner.run_due()[0].ran is False
    clock.advance(300)
    assert runner.run_due()[0].ran is True


def test_a_failing_job_is_tried_again_later(runtime: Runtime, clock: FrozenClock) -> None:
    calls: list[int] = []

    def flaky(_now: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database hiccup")
        return "done"

    runner = JobRunner(
        runtime.sessions,
        clock,
        [Job("flaky", timedelta(hours=1), flaky)],
        lease=timedelta(minutes=5),
    )
    assert runner.run_due()[0].outcome.startswith("failed")
    clock.advance(60)
    assert runner.run_due()[0].ran is False
    clock.advance(240)  # five minutes after the failure, not an hour
    assert runner.run_due()[0].outcome == "done"

"""Periodic jobs (expiry notices, device leftovers, retention), run once across workers and hosts.

Each job has a row in `job_runs` with its next due time and a lease. A process runs a due job
only after winning a conditional `UPDATE ... WHERE next_due_at <= now AND the lease is free`,
committed on its own: on PostgreSQL exactly one of any number of concurrent claimants wins
(the row lock makes the others re-check the condition and miss), on SQLite its write lock
serialises them. A process that dies mid-run leaves its lease to expire, and then another takes
the job over. The jobs themselves are idempotent as well (each notice is marked as sent by a
conditional UPDATE), so even an overrun lease sends nothing twice.

`python -m app jobs run` calls `JobRunner.run_due` once; the server calls it every
`jobs_poll_seconds` in each process (`run_jobs_loop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased, sessionmaker

from app.clock import Clock
from app.crypto.keys import Secrets
from app.crypto.keystore import KeyStore
from app.db import unit_of_work
from app.models import Credential, CredentialStatus, JobRun, User
from app.services.audit.checkpoint import take_checkpoint
from app.services.audit.log import AuditLog
from app.services.credential_rules import SIGNING_CREDENTIAL
from app.services.devices.service import purge_device_leftovers
from app.services.mail.notices import NoticeContext, queue_expiry_notice
from app.services.retention import RetentionPurge
from app.settings import Settings

logger = logging.getLogger("roamsign.jobs")

# A failed run is tried again after this long, whatever the job's interval.
RETRY_AFTER_FAILURE = timedelta(minutes=5)
EXPIRY_BATCH = 200
DEVICE_CLEANUP_INTERVAL = timedelta(minutes=5)
# Often, so that forgotten rate windows (one row per person and 10 s at least) never pile up;
# each pass has a bounded cost (app.services.retention).
RETENTION_INTERVAL = timedelta(minutes=5)
# How often the checkpoint job looks whether one is due (by events or by time).
AUDIT_CHECKPOINT_LOOK_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class Job:
    name: str
    interval: timedelta
    # One run: does its own units of work and returns a one-line summary.
    run: Callable[[datetime], str]


@dataclass(frozen=True)
class JobReport:
    name: str
    ran: bool
    outcome: str


class JobRunner:
    """Runs the jobs that are due, each only where its lease was won."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        jobs: list[Job],
        *,
        lease: timedelta,
        owner: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._jobs = jobs
        self._lease = lease
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def run_due(self) -> list[JobReport]:
        reports = []
        for job in self._jobs:
            now = self._clock.now()
            if not self._claim(job, now):
                reports.append(JobReport(job.name, ran=False, outcome="not due or running"))
                continue
            try:
                outcome = job.run(now)
            except Exception as exc:
                logger.exception("job.failed", extra={"job": job.name})
                self._release(job, now + RETRY_AFTER_FAILURE, f"failed: {type(exc).__name__}")
                reports.append(JobReport(job.name, ran=True, outcome=f"failed: {exc}"))
                continue
            self._release(job, now + job.interval, outcome)
            logger.info("job.finished", extra={"job": job.name, "outcome": outcome})
            reports.append(JobReport(job.name, ran=True, outcome=outcome))
        return reports

    def _claim(self, job: Job, now: datetime) -> bool:
        with unit_of_work(self._sessions) as session:
            _ensure_row(session, job.name, now)
            won = session.execute(
                update(JobRun)
                .where(
                    JobRun.name == job.name,
                    JobRun.next_due_at <= now,
                    or_(JobRun.lease_until.is_(None), JobRun.lease_until <= now),
                )
                .values(
                    lease_owner=self.owner,
                    lease_until=now + self._lease,
                    last_started_at=now,
                )
                .returning(JobRun.name)
                .execution_options(synchronize_session=False)
            ).first()
        return won is not None

    def _release(self, job: Job, next_due_at: datetime, outcome: str) -> None:
        with unit_of_work(self._sessions) as session:
            session.execute(
                update(JobRun)
                .where(JobRun.name == job.name, JobRun.lease_owner == self.owner)
                .values(
                    lease_owner=None,
                    lease_until=None,
                    next_due_at=next_due_at,
                    last_finished_at=self._clock.now(),
                    last_outcome=outcome[:200],
                    runs=JobRun.runs + 1,
                )
                .execution_options(synchronize_session=False)
            )


def _ensure_row(session: Session, name: str, now: datetime) -> None:
    """The job's row, due at once, unless it exists (concurrent creators: one insert wins)."""
    values = {"name": name, "next_due_at": now, "runs": 0}
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(postgresql.insert(JobRun).values(values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        session.execute(sqlite.insert(JobRun).values(values).on_conflict_do_nothing())
    else:
        raise NotImplementedError(f"job runs on {dialect}")


class ExpiryNotices:
    """E-mails each person whose roaming certificate expires within `days`, once per
    certificate; not for a credential already renewed (its successor waits for its PIN)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        notices: NoticeContext,
        audit: Callable[[Session], AuditLog],
        days: int,
    ) -> None:
        self._sessions = sessions
        self._notices = notices
        self._audit = audit
        self._window = timedelta(days=days)

    def __call__(self, now: datetime) -> str:
        sent = skipped = 0
        while True:
            with unit_of_work(self._sessions) as session:
                batch = self._due(session, now)
                for credential in batch:
                    if self._mark_sent(session, credential.id, now):
                        if self._notify(session, credential, now):
                            sent += 1
                        else:
                            skipped += 1
            if len(batch) < EXPIRY_BATCH:
                return f"expiry notices: {sent} queued, {skipped} without an e-mail address"

    def _due(self, session: Session, now: datetime) -> list[Credential]:
        successor = aliased(Credential)
        renewed = exists().where(
            successor.replaces_credential_id == Credential.id,
            successor.status != CredentialStatus.REVOKED,
        )
        return list(
            session.scalars(
                select(Credential)
                .where(
                    SIGNING_CREDENTIAL,
                    and_(Credential.not_after > now, Credential.not_after <= now + self._window),
                    Credential.expiry_notice_sent_at.is_(None),
                    ~renewed,
                )
                .order_by(Credential.not_after)
                .limit(EXPIRY_BATCH)
            )
        )

    @staticmethod
    def _mark_sent(session: Session, credential_id: str, now: datetime) -> bool:
        return (
            session.execute(
                update(Credential)
                .where(Credential.id == credential_id, Credential.expiry_notice_sent_at.is_(None))
                .values(expiry_notice_sent_at=now)
                .returning(Credential.id)
                .execution_options(synchronize_session=False)
            ).first()
            is not None
        )

    def _notify(self, session: Session, credential: Credential, now: datetime) -> bool:
        user = session.get(User, credential.user_id)
        assert user is not None  # foreign key
        queued = queue_expiry_notice(session, self._notices, user, credential, now)
        self._audit(session).record(
            now=now,
            action="credential.expiry_notice",
            actor="jobs",
            mykad=user.mykad,
            target_id=credential.id,
            outcome="queued" if queued else "no_email",
            details={
                "not_after": credential.not_after.isoformat() if credential.not_after else None
            },
        )
        return queued is not None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


class AuditCheckpoints:
    """A signed checkpoint of the audit trail when one is due (every N events or M minutes):
    a few rows read and one line appended, off the request path."""

    def __init__(self, sessions: sessionmaker[Session], key_store: KeyStore, settings: Settings):
        self._sessions = sessions
        self._key_store = key_store
        self._settings = settings

    def __call__(self, now: datetime) -> str:
        settings = self._settings
        assert settings.audit_checkpoint_dir is not None  # filled in by Settings
        checkpoint = take_checkpoint(
            self._sessions,
            self._key_store,
            settings.audit_checkpoint_dir,
            now,
            due=(
                settings.audit_checkpoint_every_events,
                settings.audit_checkpoint_interval_seconds,
            ),
        )
        if checkpoint is None:
            return "audit checkpoint: not due"
        return (
            f"audit checkpoint: {checkpoint.chains} chains, {checkpoint.events} events "
            f"({checkpoint.source})"
        )


class JobHost(Protocol):
    """What the jobs take from the process that runs them (app.runtime.Runtime is one)."""

    settings: Settings
    sessions: sessionmaker[Session]
    keys: Secrets
    key_store: KeyStore
    clock: Clock

    @property
    def notices(self) -> NoticeContext: ...

    def audit_log(self, session: Session) -> AuditLog: ...


def default_jobs(runtime: JobHost) -> list[Job]:
    settings = runtime.settings
    return [
        Job(
            name="expiry_notices",
            interval=timedelta(seconds=settings.expiry_notice_interval_seconds),
            run=ExpiryNotices(
                runtime.sessions,
                runtime.notices,
                runtime.audit_log,
                settings.expiry_notice_days,
            ),
        ),
        Job(
            name="device_leftovers",
            interval=DEVICE_CLEANUP_INTERVAL,
            run=DeviceLeftovers(runtime.sessions),
        ),
        Job(
            name="audit_checkpoint",
            interval=AUDIT_CHECKPOINT_LOOK_INTERVAL,
            run=AuditCheckpoints(runtime.sessions, runtime.key_store, settings),
        ),
        Job(
            name="retention",
            interval=RETENTION_INTERVAL,
            run=RetentionPurge(runtime.sessions, runtime.audit_log, settings.retention_days),
        ),
    ]


class DeviceLeftovers:
    """Wipe OTP messages no device fetched before they expired (an uninstalled app never calls
    again), and forget nonces that can no longer matter."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def __call__(self, now: datetime) -> str:
        with unit_of_work(self.sessions) as session:
            return purge_device_leftovers(session, now)


def job_runner(runtime: JobHost) -> JobRunner:
    return JobRunner(
        runtime.sessions,
        runtime.clock,
        default_jobs(runtime),
        lease=timedelta(seconds=runtime.settings.job_lease_seconds),
    )


async def run_jobs_loop(runner: JobRunner, poll_seconds: float, stop: asyncio.Event) -> None:
    """Run the due jobs every `poll_seconds` until `stop`; a failing pass (the database is
    down) is logged and the loop goes on."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(runner.run_due)
        except Exception:
            logger.exception("jobs.pass.failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=poll_seconds)

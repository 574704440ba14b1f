"""The console's bulk move of token users: a CSV upload (the format of `python -m app enrol
--csv` and `POST /v1/roaming-enrolments`), enrolled in batches by the API's own use case
(`ApplicationService.enrol`), with its progress and per-row report kept in the database for
the administrator who uploaded it.

The process that received the upload enrolls it, a batch at a time; each batch's enrolments
and the job's progress (rows done, counts, the batch's report lines) are one transaction, so
any process can show the progress and it never claims a row that was not committed. A job
whose process stopped (no batch committed for `STALE_AFTER`) is shown as interrupted with the
rows done so far; uploading the same file again is safe (enrolment is idempotent: the people
done already are reported as `already_enrolled`). Retention deletes old jobs."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.errors import ValidationFailed
from app.models.web import ConsoleEnrolmentJob as Job
from app.models.web import EnrolmentJobStatus as Status
from app.services.audit.log import AuditLog
from app.services.lifecycle.applications import ApplicationService
from app.services.lifecycle.bulk_enrolment import EnrolmentResult
from app.services.lifecycle.enrolment import mykads_in

BATCH_SIZE = 100  # people per transaction: small enough for the progress bar to move
REPORT_COLUMNS = ("mykad", "outcome", "application_id")
# A batch of 100 commits in well under a second, even on a loaded server: a running job with
# no committed batch for this long has lost the process that ran it (stopped, restarted,
# killed), and nothing will ever advance it again.
STALE_AFTER = timedelta(minutes=10)


def read_upload(data: bytes) -> list[str]:
    """The MyKads of an uploaded CSV file (UTF-8, a `mykad` column or the first column)."""
    try:
        text = data.decode("utf-8-sig")
        mykads = list(mykads_in(io.StringIO(text, newline="")))
    except (UnicodeDecodeError, csv.Error):
        raise ValidationFailed("the file is not a UTF-8 CSV file", "/csv") from None
    if not mykads:
        raise ValidationFailed("the file holds no MyKad", "/csv")
    return mykads


def batches(mykads: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(mykads), BATCH_SIZE):
        yield list(mykads[start : start + BATCH_SIZE])


def report_lines(results: Sequence[EnrolmentResult]) -> str:
    """A batch's rows of the report, as CSV lines (an invalid MyKad as given, less any NUL,
    which PostgreSQL refuses in text)."""
    out = io.StringIO()
    writer = csv.writer(out)
    for result in results:
        mykad = result.mykad.replace("\x00", "\ufffd")
        writer.writerow([mykad, result.outcome.value, result.application_id or ""])
    return out.getvalue()


class EnrolmentJobStopped(Exception):
    """The job is no longer running (found interrupted meanwhile, or gone): its batches stop,
    and the batch that found it rolls back."""


@dataclass(frozen=True)
class EnrolmentJob:
    """What the pages show of one upload: its progress, its counts so far."""

    id: str
    total: int
    done: int
    status: Status
    counts: dict[str, int]
    created_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status is not Status.RUNNING

    @property
    def failed(self) -> bool:
        return self.status is Status.FAILED

    @property
    def interrupted(self) -> bool:
        return self.status is Status.INTERRUPTED

    @classmethod
    def of(cls, job: Job) -> EnrolmentJob:
        return cls(
            job.id,
            job.total_rows,
            job.done_rows,
            Status(job.status),
            dict(sorted(job.counts.items())),
            job.created_at,
            job.finished_at,
        )


class ConsoleEnrolmentJobs:
    """The bulk-move jobs: started by the page that received the upload, advanced a batch at a
    time by its process's background task, read by any process. Never commits."""

    def __init__(self, session: Session, applications: ApplicationService, audit: AuditLog):
        self.session = session
        self.applications = applications
        self.audit = audit

    def start(self, admin_user_id: str, actor: str, total: int, now: datetime) -> str:
        """A new running job of `total` rows for this administrator (audited); its id."""
        job = Job(
            admin_user_id=admin_user_id,
            created_at=now,
            progress_at=now,
            status=Status.RUNNING,
            total_rows=total,
            done_rows=0,
            counts={},
            report="",
        )
        self.session.add(job)
        self.session.flush()
        self.audit.record(
            now=now,
            action="console.enrolment_uploaded",
            actor=actor,
            target_id=job.id,
            details={"rows": total},
        )
        return job.id

    def enrol_batch(self, job_id: str, actor: str, mykads: Sequence[str], now: datetime) -> None:
        """Enrol one batch and advance the job by it, in the caller's transaction; the last
        batch finishes the job. Raises `EnrolmentJobStopped` if the job no longer runs."""
        job = self.session.scalars(
            select(Job).where(Job.id == job_id).with_for_update()
        ).one_or_none()
        if job is None or job.status != Status.RUNNING:
            raise EnrolmentJobStopped(job_id)
        results = self.applications.enrol(actor, mykads, now)
        counts = Counter(job.counts)
        counts.update(result.outcome.value for result in results)
        done = job.done_rows + len(results)
        last = done >= job.total_rows
        advanced = self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == Status.RUNNING)
            .values(
                done_rows=done,
                counts=dict(sorted(counts.items())),
                report=Job.report + report_lines(results),
                progress_at=now,
                status=Status.FINISHED if last else Status.RUNNING,
                finished_at=now if last else None,
            )
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        ).first()
        if advanced is None:  # found interrupted since it was read (SQLite takes no row lock)
            raise EnrolmentJobStopped(job_id)

    def fail(self, job_id: str, now: datetime) -> None:
        """A batch raised: the job stops there (the rows before it stay done)."""
        self._stop(job_id, Status.FAILED, now)

    def find(self, job_id: str, admin_user_id: str, now: datetime) -> EnrolmentJob | None:
        """The job, if it is this administrator's (another's is None, as an unknown one); a
        running job silent for `STALE_AFTER` is marked interrupted first."""
        job = self.session.scalars(
            select(Job).where(Job.id == job_id, Job.admin_user_id == admin_user_id)
        ).one_or_none()
        if job is None:
            return None
        if job.status == Status.RUNNING and job.progress_at + STALE_AFTER <= now:
            self._stop(job.id, Status.INTERRUPTED, job.progress_at, silent_since=now - STALE_AFTER)
            self.session.refresh(job)
        return EnrolmentJob.of(job)

    def report_csv(self, job_id: str, admin_user_id: str, now: datetime) -> str | None:
        """The per-row report so far (a header, then one line per row done), or None."""
        if self.find(job_id, admin_user_id, now) is None:
            return None
        rows = self.session.scalar(select(Job.report).where(Job.id == job_id)) or ""
        out = io.StringIO()
        csv.writer(out).writerow(REPORT_COLUMNS)
        return out.getvalue() + rows

    def _stop(
        self, job_id: str, status: Status, at: datetime, silent_since: datetime | None = None
    ) -> None:
        """Running -> `status`, unless it stopped meanwhile (or, given `silent_since`, a batch
        committed since)."""
        where: list[Any] = [Job.id == job_id, Job.status == Status.RUNNING]
        if silent_since is not None:
            where.append(Job.progress_at <= silent_since)
        self.session.execute(
            update(Job)
            .where(*where)
            .values(status=status, finished_at=at)
            .execution_options(synchronize_session=False)
        )

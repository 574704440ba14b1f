"""The console's bulk move of token users: a CSV upload (the format of `python -m app enrol
--csv` and `POST /v1/roaming-enrolments`), enrolled in batches by the API's own use case
(`ApplicationService.enrol`), each batch its own transaction, with its progress and per-row
report kept for the administrator who uploaded it.

The jobs live in the process that received the upload (`EnrolmentJobs`, a few at a time, for
an hour): its progress page asks that process. What the enrolment did is in the database and
the audit trail whatever happens to the job; running the same file again is safe."""

from __future__ import annotations

import csv
import io
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.errors import ValidationFailed
from app.services.audit.log import AuditLog
from app.services.lifecycle.bulk_enrolment import EnrolmentResult
from app.services.lifecycle.enrolment import mykads_in

BATCH_SIZE = 100  # people per transaction: small enough for the progress bar to move
REPORT_COLUMNS = ("mykad", "outcome", "application_id")


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


def record_upload(audit: AuditLog, actor: str, job_id: str, rows: int, now: datetime) -> None:
    audit.record(
        now=now,
        action="console.enrolment_uploaded",
        actor=actor,
        target_id=job_id,
        details={"rows": rows},
    )


@dataclass
class EnrolmentJob:
    """One upload being enrolled: its progress, its report so far."""

    id: str
    owner_id: str  # the administrator's person id: only they see it
    total: int
    started_at: datetime
    results: list[EnrolmentResult] = field(default_factory=list)
    finished_at: datetime | None = None
    failed: bool = False

    @property
    def done(self) -> int:
        return len(self.results)

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(result.outcome.value for result in self.results).items()))

    def batches(self, mykads: list[str]) -> Iterator[list[str]]:
        for start in range(0, len(mykads), BATCH_SIZE):
            yield mykads[start : start + BATCH_SIZE]

    def report_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(REPORT_COLUMNS)
        for result in self.results:
            writer.writerow([result.mykad, result.outcome.value, result.application_id or ""])
        return out.getvalue()


class EnrolmentJobs:
    """The jobs of this process: at most `LIMIT` kept, each for `KEPT` after it finished."""

    LIMIT = 20
    KEPT = timedelta(hours=1)

    def __init__(self) -> None:
        self._jobs: dict[str, EnrolmentJob] = {}

    def start(self, owner_id: str, total: int, now: datetime) -> EnrolmentJob:
        self._forget_old(now)
        job = EnrolmentJob(str(uuid.uuid4()), owner_id, total, now)
        self._jobs[job.id] = job
        return job

    def get(self, job_id: str, owner_id: str) -> EnrolmentJob | None:
        job = self._jobs.get(job_id)
        return job if job is not None and job.owner_id == owner_id else None

    def _forget_old(self, now: datetime) -> None:
        for job_id, job in list(self._jobs.items()):
            if job.finished_at is not None and job.finished_at + self.KEPT <= now:
                del self._jobs[job_id]
        finished = [job for job in self._jobs.values() if job.finished_at is not None]
        for job in sorted(finished, key=lambda job: job.started_at)[
            : max(0, len(self._jobs) - self.LIMIT + 1)
        ]:
            del self._jobs[job.id]

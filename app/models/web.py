"""The pages' sign-ins (cookie sessions), the console's administrators and its bulk-move jobs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime
from app.models.base import id_column, timestamp


class WebRealm(StrEnum):
    SELF_SERVICE = "me"  # a person, for their own credentials (/me/)
    CONSOLE = "console"  # an administrator (/console/)


class WebSession(Base):
    """One sign-in of a browser. The cookie holds a random token; only its SHA-256 is kept, so
    a copy of this table signs nobody in."""

    __tablename__ = "web_sessions"
    __table_args__ = (Index("ix_web_sessions_expires_at", "expires_at"),)

    id: Mapped[str] = id_column()
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    realm: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = timestamp()
    last_seen_at: Mapped[datetime] = timestamp()
    # The absolute end; an idle session ends sooner (settings.web_session_idle_seconds).
    expires_at: Mapped[datetime] = timestamp()
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ConsoleRole(StrEnum):
    JDN_ADMIN = "jdn_admin"
    AGENCY_ADMIN = "agency_admin"


class ConsoleAdministrator(Base):
    """A person who may sign in to the console (granted with the CLI): JDN, or the
    administrator of one agency."""

    __tablename__ = "console_administrators"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    agency: Mapped[str | None] = mapped_column(String(100))
    granted_at: Mapped[datetime] = timestamp()
    granted_by: Mapped[str] = mapped_column(String(100))


class EnrolmentJobStatus(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"  # a batch raised: the rows before it stay done
    INTERRUPTED = "interrupted"  # its process stopped (no batch committed for a while)


class ConsoleEnrolmentJob(Base):
    """One CSV upload of the console's bulk move, enrolled in batches by the process that
    received it, and readable from any: each batch's enrolments, `done_rows`, `counts` and
    `report` are committed together, so the progress never claims an uncommitted row."""

    __tablename__ = "console_enrolment_jobs"
    # Retention deletes by age (app/services/retention.py).
    __table_args__ = (Index("ix_console_enrolment_jobs_created_at", "created_at"),)

    id: Mapped[str] = id_column()
    admin_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = timestamp()
    # The last committed batch (or the start): a running job silent for long is interrupted.
    progress_at: Mapped[datetime] = timestamp()
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(12))
    total_rows: Mapped[int] = mapped_column(Integer)
    done_rows: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # outcome -> rows
    # The per-row report as CSV lines (mykad, outcome, application id), appended a batch at a
    # time (`report || :lines`) and read only for the download: the page's 64 KiB upload is at
    # most ~4,500 rows of 30-70 bytes, 135-310 KB (a child table would be ~4,500 rows a job).
    report: Mapped[str] = mapped_column(Text, default="", deferred=True)

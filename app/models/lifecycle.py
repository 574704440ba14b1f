"""The roaming lifecycle: applications, e-mailed one-time tokens, and the periodic jobs' runs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime
from app.models.base import id_column, timestamp


class ApplicationStatus(StrEnum):
    AWAITING_EMAIL_VERIFICATION = "awaiting_email_verification"
    EMAIL_VERIFIED = "email_verified"
    # The CA issued the credential; it becomes active once the person sets its PIN.
    APPROVED = "approved"


OPEN_APPLICATION_STATUSES = (
    ApplicationStatus.AWAITING_EMAIL_VERIFICATION,
    ApplicationStatus.EMAIL_VERIFIED,
)


class RoamingApplication(Base):
    __tablename__ = "roaming_applications"
    __table_args__ = (
        # One open application per person: the database settles two concurrent openings.
        Index(
            "uq_roaming_applications_open",
            "user_id",
            unique=True,
            postgresql_where=text("status IN ('awaiting_email_verification', 'email_verified')"),
            sqlite_where=text("status IN ('awaiting_email_verification', 'email_verified')"),
        ),
    )

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(32))
    # "portal", "jdn_admin" or "enrolment": how the application was opened.
    origin: Mapped[str] = mapped_column(String(16))
    opened_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = timestamp()
    email_verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    approved_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    credential_id: Mapped[str | None] = mapped_column(ForeignKey("credentials.id"))


class TokenPurpose(StrEnum):
    APPLICATION_EMAIL = "application_email"  # subject: the application
    PIN_SETUP = "pin_setup"  # subject: the credential
    PIN_RESET = "pin_reset"  # subject: the credential
    EMAIL_CHANGE = "email_change"  # subject: the person; `email` is the new address


class OneTimeToken(Base):
    """A token e-mailed to a person, kept only as a MAC bound to its purpose and subject."""

    __tablename__ = "one_time_tokens"
    __table_args__ = (
        Index("ix_one_time_tokens_purpose_subject_id", "purpose", "subject_id"),
        Index("ix_one_time_tokens_user_id_created_at", "user_id", "created_at"),
        # The retention job finds tokens long past their validity by it.
        Index("ix_one_time_tokens_expires_at", "expires_at"),
    )

    id: Mapped[str] = id_column()
    purpose: Mapped[str] = mapped_column(String(24))
    subject_id: Mapped[str] = mapped_column(String(36))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    token_mac: Mapped[bytes] = mapped_column(LargeBinary(32))
    # Where it was sent (for an address change: the new address, applied once confirmed).
    email: Mapped[str] = mapped_column(String(254))
    # Sent again on someone's request (a resend, a PIN reset, an address change): rate-limited.
    is_on_request: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = timestamp()
    expires_at: Mapped[datetime] = timestamp()
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # A newer token for the same purpose and subject, or a new e-mail address, ended it.
    superseded_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class JobRun(Base):
    """One periodic job's schedule and lease: a conditional UPDATE hands each due run to one
    process, across workers and hosts."""

    __tablename__ = "job_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_due_at: Mapped[datetime] = timestamp()
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_outcome: Mapped[str | None] = mapped_column(String(200))
    runs: Mapped[int] = mapped_column(Integer, default=0)

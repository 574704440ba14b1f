"""Rate-limit counters: hits per subject and time bucket, shared by every process and host."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime
from app.models.base import timestamp


class RateWindow(Base):
    """The hits one rate limit counted for one subject in one time bucket, on one shard of it
    (see `app.services.rate_limits`). The key is a keyed digest of the limit's name and the
    subject (a MyKad, a client address, a signer), never the subject itself."""

    __tablename__ = "rate_windows"
    __table_args__ = (Index("ix_rate_windows_expires_at", "expires_at"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket_started_at: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer)
    # When the bucket stops counting; the retention job deletes it from then on.
    expires_at: Mapped[datetime] = timestamp()

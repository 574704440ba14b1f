"""The pages' sign-ins (cookie sessions) and the console's administrators."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String
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

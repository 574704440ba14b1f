"""API clients: the systems and portals that call roamsign."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UtcDateTime
from app.models.base import id_column, timestamp


class Role(StrEnum):
    SIGNER = "signer"
    PORTAL = "portal"
    AGENCY_ADMIN = "agency_admin"
    JDN_ADMIN = "jdn_admin"


class ApiClient(Base):
    __tablename__ = "api_clients"

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    agency: Mapped[str | None] = mapped_column(String(100))
    # SHA-256 of the key: keys are 256-bit random strings, so a fast hash is enough and lets
    # the key itself be looked up by an index.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = timestamp()
    rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
